import fs from 'node:fs';
import { log } from '../../common/log.ts';
import { parseAdapterFlag } from '../../serve/adapter.ts';
import { startServer } from '../../serve/serve.ts';
import { UsageError, type Flags } from '../args.ts';
import type { Command } from '../command.ts';
import { DEVICE_FLAGS, deviceOptions } from '../device.ts';

function apiKey(f: Flags): string | null {
  if (f.has('api-key') && f.has('api-key-file')) throw new UsageError('give --api-key or --api-key-file, not both');
  let key = f.str('api-key') ?? process.env.PROPIPE_API_KEY ?? null;
  const file = f.str('api-key-file');
  if (file) {
    try {
      key = fs.readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new UsageError(`--api-key-file ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  }
  if (key === '') throw new UsageError('the API key is empty; pass a non-empty --api-key or --api-key-file');
  return key;
}

const SHUTDOWN_GRACE_MS = 25_000;

export const serveCommand: Command = {
  name: 'serve',
  summary: 'OpenAI-compatible HTTP server for a model and its trained adapters (KV cache, continuous batching)',
  usage: 'propipe serve --model DIR [--adapter NAME=DIR ...] [--host H] [--port P] [--api-key KEY | --api-key-file F] [--served-model-name NAME] [--max-model-len N] [--max-batch B]',
  flags: {
    model: { type: 'string', description: 'base model directory (HF format), e.g. the model a run trained from' },
    adapter: { type: 'string', multiple: true, description: "NAME=DIR: serve a run's output_dir/adapter as model NAME on the same base (repeatable)" },
    host: { type: 'string', description: 'address to listen on', default: '127.0.0.1' },
    port: { type: 'string', description: 'port to listen on', default: '8000' },
    'api-key': { type: 'string', description: 'require `Authorization: Bearer KEY` on /v1 (or set PROPIPE_API_KEY)' },
    'api-key-file': { type: 'string', description: 'file holding the API key' },
    'served-model-name': { type: 'string', description: "the base model's name in the API (default: the directory's name)" },
    'max-model-len': { type: 'string', description: "context length served, prompt + completion (default: the model's max_position_embeddings)" },
    'max-batch': { type: 'string', description: 'sequences decoded together', default: '16' },
    'max-queue': { type: 'string', description: 'requests that may wait for a batch slot before new ones get 429 (default: 4 × max-batch)' },
    ...DEVICE_FLAGS,
  },
  async run(f) {
    const key = apiKey(f);
    const host = f.str('host') ?? '127.0.0.1';
    if (key === null && !['127.0.0.1', 'localhost', '::1'].includes(host)) log.warn({ host }, 'listening beyond this machine without --api-key: anyone who can reach it can use the model');
    const maxBatch = f.int('max-batch', 16);
    if (maxBatch < 1) throw new UsageError(`--max-batch must be at least 1, got ${maxBatch}`);
    const server = await startServer({
      model: f.required('model'),
      adapters: f.list('adapter').map(parseAdapterFlag),
      host,
      port: f.int('port', 8000),
      apiKey: key,
      servedModelName: f.str('served-model-name'),
      maxModelLen: f.has('max-model-len') ? f.int('max-model-len') : undefined,
      maxBatch,
      maxQueue: f.has('max-queue') ? f.int('max-queue') : undefined,
      ...deviceOptions(f),
    });
    console.log(`serving ${server.loaded.info.map((m) => m.id).join(', ')} at ${server.url}/v1`);
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    // As Kubernetes expects: on SIGTERM, finish what is running (within its default 30 s grace), then exit.
    log.info('draining: running requests finish, new ones get 503');
    await server.close(SHUTDOWN_GRACE_MS);
  },
};
