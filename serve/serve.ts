// Loading what `propipe serve` and `propipe chat` run: the base model, its adapters, the sessions and
// the generation engine; and starting the HTTP server on top.
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Device } from '../model/graph/session.ts';
import { childLog } from '../common/log.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { loadTokenizer, type TextTokenizer } from '../model/hf/tokenizer.ts';
import { loadServedAdapter } from './adapter.ts';
import { Engine } from './engine.ts';
import { readGenerationConfig } from './generation-config.ts';
import { ServeMetrics } from './metrics.ts';
import { createApiServer, type ServedModelInfo } from './server.ts';
import type { SamplingParams } from './sampling.ts';
import { ServedStack } from './stack.ts';

const log = childLog({ component: 'serve' });

export interface LoadOptions {
  model: string;
  adapters?: readonly { name: string; dir: string }[];
  /** Name of the base model in the API; default: the model directory's name. */
  servedModelName?: string;
  maxModelLen?: number;
  maxBatch?: number;
  maxQueue?: number;
  device?: Device;
  threads?: number;
}

export interface Loaded {
  engine: Engine;
  stack: ServedStack;
  tokenizer: TextTokenizer;
  metrics: ServeMetrics;
  info: ServedModelInfo[];
  maxModelLen: number;
  maxBatch: number;
  /** Sampling defaults from generation_config.json, for requests that leave them out. */
  defaults: Partial<SamplingParams>;
  close(): Promise<void>;
}

export async function loadServing(o: LoadOptions): Promise<Loaded> {
  const base = openPretrained(o.model);
  const { config } = base;
  const tokenizer = await loadTokenizer(o.model);
  const baseName = o.servedModelName ?? path.basename(path.resolve(o.model));
  const maxModelLen = o.maxModelLen ?? config.maxPositionEmbeddings;
  if (maxModelLen < 2 || maxModelLen > config.maxPositionEmbeddings) {
    throw new Error(`--max-model-len ${maxModelLen} must be between 2 and the model's max_position_embeddings (${config.maxPositionEmbeddings})`);
  }
  if (config.arch === 'qwen2' && config.slidingWindow !== null && maxModelLen > config.slidingWindow) {
    throw new Error(`Qwen2 sliding-window attention applies to some layers only and is not supported; pass --max-model-len ${config.slidingWindow} or less`);
  }
  const names = new Set([baseName]);
  const adapters = (o.adapters ?? []).map((a) => {
    if (names.has(a.name)) throw new Error(`adapter name '${a.name}' is used twice (the base is served as '${baseName}'); give each --adapter its own NAME`);
    names.add(a.name);
    return loadServedAdapter(a.name, a.dir, config, base.load, o.model);
  });
  const stack = await ServedStack.load(config, base.load, baseName, adapters, { device: o.device, threads: o.threads, maxModelLen });
  const metrics = new ServeMetrics();
  const maxBatch = o.maxBatch ?? 16;
  const generation = readGenerationConfig(o.model);
  const eos = [...config.eosTokenIds, ...generation.eos, ...(tokenizer.eosId === null ? [] : [tokenizer.eosId])];
  const engine = new Engine(stack, tokenizer, { maxBatch, maxQueue: o.maxQueue ?? 4 * maxBatch, maxModelLen, eos }, metrics);
  const info: ServedModelInfo[] = [
    { id: baseName, parent: null, root: path.resolve(o.model) },
    ...adapters.map((a) => ({ id: a.name, parent: baseName, root: path.resolve(a.dir) })),
  ];
  return {
    engine, stack, tokenizer, metrics, info, maxModelLen, maxBatch, defaults: generation.defaults,
    async close() {
      await engine.close();
      await stack.release();
    },
  };
}

export interface RunningServer {
  url: string;
  loaded: Loaded;
  close(graceMs?: number): Promise<void>;
}

export async function startServer(o: LoadOptions & { host?: string; port?: number; apiKey?: string | null }): Promise<RunningServer> {
  const loaded = await loadServing(o);
  const server = createApiServer({
    engine: loaded.engine,
    tokenizer: loaded.tokenizer,
    models: loaded.info.map((m) => m.id),
    maxModelLen: loaded.maxModelLen,
    maxBatch: loaded.maxBatch,
    defaults: loaded.defaults,
    apiKey: o.apiKey ?? null,
    metrics: loaded.metrics,
    info: loaded.info,
  });
  const host = o.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 8000, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  log.info({ url, models: loaded.info.map((m) => m.id), maxModelLen: loaded.maxModelLen, maxBatch: loaded.maxBatch }, 'serving');
  return {
    url,
    loaded,
    /** Stops accepting connections, lets running requests finish (up to `graceMs`), then stops. */
    async close(graceMs = 0) {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      await loaded.engine.drain(graceMs);
      server.closeAllConnections();
      await closed;
      await loaded.close();
    },
  };
}
