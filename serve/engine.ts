// The generation loop: a bounded queue in front of running batches. Between decode steps, waiting
// requests are prefilled and join a batch, and finished or cancelled rows leave it (continuous
// batching). Models that run the same sessions share one batch: the base and its LoRA-only adapters
// (each row keeps its own LoRA slice). An adapter with blocks of its own (LLaMA Pro, a retrained head)
// has its own batch, and batches run in turn, one decode step each per round.
import type { TextTokenizer } from '../model/hf/tokenizer.ts';
import { childLog } from '../common/log.ts';
import { KvBatch } from './kv-batch.ts';
import type { ServeMetrics } from './metrics.ts';
import { Sequence, type GenerationRequest, type GenerationResult } from './sequence.ts';
import type { Chain, ServedStack, StepResult } from './stack.ts';

const log = childLog({ component: 'serve' });

/** As vLLM's max_num_batched_tokens: bounds how long a burst of new prompts stalls running rows. */
const PREFILL_TOKENS_PER_ROUND = 2048;
/** Prompt tokens per prefill run. */
export const PREFILL_CHUNK = 512;

export class QueueFullError extends Error {
  constructor(readonly limit: number) {
    super(`the server is at capacity (${limit} requests waiting); retry later`);
    this.name = 'QueueFullError';
  }
}

export class ShuttingDownError extends Error {
  constructor() {
    super('the server is shutting down; retry on another replica');
    this.name = 'ShuttingDownError';
  }
}

export interface EngineOptions {
  /** Rows (sequences) decoded together, over all models. */
  maxBatch: number;
  /** Requests that may wait for a slot before new ones are refused. */
  maxQueue: number;
  maxModelLen: number;
  /** Token ids that end a choice (config.json, generation_config.json, the tokenizer's eos). */
  eos: readonly number[];
}

interface Pending {
  req: GenerationRequest;
  queuedAt: number;
  resolve: (r: GenerationResult) => void;
  reject: (e: unknown) => void;
}

/** A running batch: rows of the models that share one set of sessions (the base and its LoRA adapters). */
interface Group {
  /** The chain the batch runs (any of its models': they share every session). */
  chain: Chain;
  /** Its models, for metrics and logs. */
  label: string;
  kv: KvBatch;
  rows: Sequence[];
}

export class Engine {
  private readonly queue: Pending[] = [];
  private readonly groups = new Map<string, Group>();
  private wake: (() => void) | null = null;
  private stopped = false;
  /** Set by drain(): new requests are refused while the running ones finish. */
  private draining = false;
  private readonly loopDone: Promise<void>;
  private readonly eos: Set<number>;
  /** Resolves a row's request once its last row has finished. */
  private readonly settlers = new WeakMap<Sequence, () => void>();
  /** Rejects a row's request when its batch fails. */
  private readonly failers = new WeakMap<Sequence, (err: unknown) => void>();

  constructor(
    private readonly stack: ServedStack,
    private readonly tokenizer: TextTokenizer,
    readonly opts: EngineOptions,
    private readonly metrics: ServeMetrics | null = null,
  ) {
    this.eos = new Set(opts.eos);
    this.loopDone = this.loop().catch((err) => log.fatal({ err }, 'generation loop failed'));
  }

  get queueLength(): number {
    return this.queue.length;
  }

  get runningRows(): number {
    let n = 0;
    for (const g of this.groups.values()) n += g.rows.length;
    return n;
  }

  /** The running batches: the models of their rows (a row per entry). */
  batches(): string[][] {
    return [...this.groups.values()].filter((g) => g.rows.length > 0).map((g) => g.rows.map((r) => r.req.model));
  }

  /** Queues a request; rejects at once with QueueFullError when the queue is full. */
  generate(req: GenerationRequest): Promise<GenerationResult> {
    try {
      return this.generateAll([req])[0];
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Queues the requests of one API call (one per prompt) together: all of them, or none. Throws at once
   * (QueueFullError when the queue is full), so the caller can answer before it starts a stream.
   */
  generateAll(reqs: readonly GenerationRequest[]): Promise<GenerationResult>[] {
    if (this.stopped || this.draining) throw new ShuttingDownError();
    const bad = reqs.find((r) => !this.stack.chains.has(r.model));
    if (bad) throw new Error(`unknown model '${bad.model}'`);
    const wide = reqs.find((r) => r.n > this.opts.maxBatch);
    if (wide) throw new RangeError(`n (${wide.n}) is larger than --max-batch (${this.opts.maxBatch})`);
    if (this.queue.length + reqs.length > this.opts.maxQueue) throw new QueueFullError(this.opts.maxQueue);
    const all = reqs.map((req) => new Promise<GenerationResult>((resolve, reject) => this.queue.push({ req, queuedAt: performance.now(), resolve, reject })));
    this.metrics?.queueLength.set(this.queue.length);
    this.wake?.();
    return all;
  }

  /** Refuses new requests and waits (at most `timeoutMs`) for the queued and running ones to finish. */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const deadline = performance.now() + timeoutMs;
    while ((this.queue.length > 0 || this.runningRows > 0) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  }

  get isDraining(): boolean {
    return this.draining || this.stopped;
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loopDone;
    for (const p of this.queue.splice(0)) p.reject(new ShuttingDownError());
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      await this.admit();
      const active = [...this.groups.values()].filter((g) => g.rows.length > 0);
      if (active.length === 0) {
        if (this.queue.length === 0) await new Promise<void>((r) => (this.wake = r));
        this.wake = null;
        continue;
      }
      for (const g of active) {
        try {
          await this.decode(g);
        } catch (err) {
          // A failed step leaves the batch's cache unusable: its requests fail, the server goes on.
          log.error({ err, batch: g.label, rows: g.rows.length }, 'decode step failed');
          for (const s of g.rows) this.failers.get(s)?.(err);
          g.rows = [];
          g.kv.removeRows(new Set(g.kv.lens.map((_, r) => r)));
        }
      }
    }
    for (const g of this.groups.values()) for (const s of g.rows) s.abort();
  }

  /** Prefills waiting requests while the running batches have room. */
  private async admit(): Promise<void> {
    // Prompt tokens prefilled per round: past the budget, running rows get their next token first.
    let budget = PREFILL_TOKENS_PER_ROUND;
    const running = this.runningRows > 0;
    while (this.queue.length > 0 && this.runningRows + this.queue[0].req.n <= this.opts.maxBatch && (budget > 0 || !running)) {
      const p = this.queue.shift()!;
      budget -= p.req.prompt.length;
      this.metrics?.queueLength.set(this.queue.length);
      try {
        await this.prefill(p);
      } catch (err) {
        p.reject(err);
      }
    }
  }

  private async prefill(p: Pending): Promise<void> {
    const { req } = p;
    const seqs = Array.from({ length: req.n }, (_, c) => new Sequence(req, c, this.tokenizer, this.eos, this.opts.maxModelLen));
    const settle = () => {
      if (seqs.every((s) => s.finish)) {
        const completionTokens = seqs.reduce((a, s) => a + s.tokenIds.length, 0);
        p.resolve({ choices: seqs.map((s) => s.result()), promptTokens: req.prompt.length, completionTokens });
      }
    };
    if (req.signal?.aborted) {
      seqs.forEach((s) => s.abort());
      return settle();
    }
    const chain = this.stack.chains.get(req.model)!;
    let group = this.groups.get(chain.batchKey);
    if (!group) {
      const c = this.stack.config;
      const models = [...this.stack.chains.values()].filter((m) => m.batchKey === chain.batchKey).map((m) => m.name);
      group = { chain, label: models.join('+'), kv: new KvBatch(chain.numLayers, c.numKvHeads * c.headDim, c.headDim), rows: [] };
      this.groups.set(chain.batchKey, group);
    }
    const out = await this.prefillChunks(chain, req.prompt);
    this.metrics?.promptTokens.inc({ model: req.model }, req.prompt.length);
    this.metrics?.ttft.observe({ model: req.model }, (performance.now() - p.queuedAt) / 1000);
    const vocab = this.stack.config.vocabSize;
    const alive = seqs.filter((s) => s.accept(out.logits, 0, vocab));
    this.metrics?.generationTokens.inc({ model: req.model }, seqs.length);
    if (alive.length > 0) {
      group.kv.addRows(out.present, req.prompt.length, alive.length);
      group.rows.push(...alive);
      // Each row settles the request when it ends; the last one resolves it.
      for (const s of alive) {
        this.settlers.set(s, settle);
        this.failers.set(s, p.reject);
      }
    }
    this.metrics?.running.set(this.runningRows);
    settle();
  }

  /**
   * A prompt's cache and last logits, PREFILL_CHUNK tokens per run: attention scores of a chunk are
   * chunk × prompt, not prompt², so a long prompt does not need gigabytes at once.
   */
  private async prefillChunks(chain: Chain, prompt: readonly number[]): Promise<StepResult> {
    if (prompt.length <= PREFILL_CHUNK) return this.stack.step(chain, prompt, 1, prompt.length, null);
    const c = this.stack.config;
    const kv = new KvBatch(chain.numLayers, c.numKvHeads * c.headDim, c.headDim);
    kv.addRows(Array.from({ length: chain.numLayers }, () => ({ key: new Float32Array(0), value: new Float32Array(0) })), 0, 1);
    let out: StepResult | null = null;
    for (let at = 0; at < prompt.length; at += PREFILL_CHUNK) {
      const chunk = prompt.slice(at, at + PREFILL_CHUNK);
      out = await this.stack.step(chain, chunk, 1, chunk.length, kv);
      kv.advance(out.present, chunk.length);
    }
    return out!;
  }

  private async decode(g: Group): Promise<void> {
    this.drop(g, (s) => s.req.signal?.aborted === true);
    if (g.rows.length === 0) return;
    const started = performance.now();
    const models = g.rows.map((s) => this.stack.chains.get(s.req.model)!);
    const out = await this.stack.step(g.chain, g.rows.map((s) => s.last), g.rows.length, 1, g.kv, models);
    g.kv.advance(out.present, 1);
    const vocab = this.stack.config.vocabSize;
    g.rows.forEach((s, r) => s.accept(out.logits, r * vocab, vocab));
    const seconds = (performance.now() - started) / 1000;
    this.metrics?.decodeStep.observe(seconds);
    this.metrics?.decodeRate.set({ batch: g.label }, g.rows.length / seconds);
    for (const m of models) this.metrics?.generationTokens.inc({ model: m.name });
    this.drop(g, (s) => s.finish !== null);
  }

  /** Removes rows that match `done` from a batch (aborting the cancelled ones) and settles their requests. */
  private drop(g: Group, done: (s: Sequence) => boolean): void {
    const gone = new Set<number>();
    g.rows.forEach((s, r) => {
      if (done(s)) {
        s.abort();
        gone.add(r);
      }
    });
    if (gone.size === 0) return;
    const leaving = g.rows.filter((_, r) => gone.has(r));
    g.kv.removeRows(gone);
    g.rows = g.rows.filter((_, r) => !gone.has(r));
    for (const s of leaving) this.settlers.get(s)?.();
    this.metrics?.running.set(this.runningRows);
  }
}
