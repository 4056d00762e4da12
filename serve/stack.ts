// The loaded base and its adapters as ONNX Runtime sessions. Base blocks are cut into segments at
// every place an adapter departs from the base (a LLaMA Pro block inserted, a block retrained), so
// each base weight lives in exactly one session that every adapter runs; an adapter adds sessions
// for its own blocks only, and its LoRA factors on base blocks live in the shared
// segments, stacked with a per-row mask (serve/lora-stack.ts). Models whose sessions are the same
// (the base and its LoRA-only adapters) share a batch; an adapter with blocks of its own runs its own.
import type { ModelConfig } from '../model/hf/config.ts';
import type { HostTensor } from '../model/graph/dtype.ts';
import { CompiledGraph, type Device } from '../model/graph/session.ts';
import { LORA_ROW_MASK, ParamBinder, type WeightLoader } from '../model/llama/params.ts';
import { childLog } from '../common/log.ts';
import type { LayerSlot, ServedAdapter } from './adapter.ts';
import { maskRow, stackLora, type StackedLora } from './lora-stack.ts';
import { buildCachedBlocks, buildHead, SERVE_IO } from './cache-graph.ts';
import type { KvBatch, LayerKv } from './kv-batch.ts';
import { RopeCache, stepMask } from './step-inputs.ts';

const log = childLog({ component: 'serve' });

interface Segment {
  id: number;
  session: CompiledGraph;
  layers: number;
  /** Stacked LoRA rank of the segment (0: none): the width of its row mask. */
  loraRank: number;
}

/** What one model name runs: its segments in order, its head and its embedding table. */
export interface Chain {
  name: string;
  /** Each segment, with this model's LoRA mask row on it. */
  parts: { segment: Segment; mask: Float32Array | null }[];
  head: CompiledGraph;
  embed: Float32Array;
  numLayers: number;
  /** Models with the same key run the same sessions, so their rows may share a batch. */
  batchKey: string;
}

export interface StackOptions {
  device?: Device;
  threads?: number;
  maxModelLen: number;
}

export interface StepResult {
  /** [rows, vocab] logits of each row's last token. */
  logits: Float32Array;
  present: LayerKv[];
}

export class ServedStack {
  readonly chains = new Map<string, Chain>();
  private readonly rope: RopeCache;
  private readonly sessions: CompiledGraph[] = [];
  private segmentCount = 0;

  private constructor(readonly config: ModelConfig, readonly opts: StackOptions) {
    this.rope = new RopeCache(config, opts.maxModelLen);
  }

  static async load(config: ModelConfig, load: WeightLoader, baseName: string, adapters: readonly ServedAdapter[], opts: StackOptions): Promise<ServedStack> {
    const s = new ServedStack(config, opts);
    const L = config.numLayers;
    const splits = new Set([0, L]);
    for (const a of adapters) {
      a.slots.forEach((slot, i) => {
        const prev = a.slots[i - 1];
        if (slot.kind === 'base' && (prev?.kind !== 'base' || prev.source !== slot.source - 1)) splits.add(slot.source);
        if (slot.kind === 'base') {
          const next = a.slots[i + 1];
          if (next?.kind !== 'base' || next.source !== slot.source + 1) splits.add(slot.source + 1);
        }
      });
    }
    const bounds = [...splits].sort((x, y) => x - y);
    const baseSegments = new Map<number, { segment: Segment; lora: StackedLora }>();
    for (let k = 0; k + 1 < bounds.length; k++) {
      const [start, end] = [bounds[k], bounds[k + 1]];
      const lora = stackLora(config, adapters, start, end);
      const segLoad: WeightLoader = (n) => lora.factors.get(n) ?? load(n);
      const session = await s.compile(buildCachedBlocks(config, range(start, end), new ParamBinder({ trainable: new Set(), load: segLoad, lora: lora.spec })));
      baseSegments.set(start, { segment: { id: s.segmentCount++, session, layers: end - start, loraRank: lora.rank }, lora });
    }
    const baseHead = await s.compile(buildHead(config, new ParamBinder({ trainable: new Set(), load })));
    const baseEmbed = load('model.embed_tokens.weight');

    const all: LayerSlot[] = Array.from({ length: L }, (_, i) => ({ kind: 'base', source: i }));
    // Models whose segments, head and embedding are the same objects run the same sessions.
    const batchKey = (c: Chain, head: string, embed: string) => `${c.parts.map((p) => p.segment.id).join(',')}|${head}|${embed}`;
    const baseChain = s.chainOf(baseName, all, baseSegments, baseHead, baseEmbed);
    baseChain.batchKey = batchKey(baseChain, 'base', 'base');
    s.chains.set(baseName, baseChain);
    for (const a of adapters) {
      const head = a.ownHead ? await s.compile(buildHead(config, new ParamBinder({ trainable: new Set(), load: a.load }))) : baseHead;
      const embed = a.ownEmbedding ? a.load('model.embed_tokens.weight') : baseEmbed;
      const chain = s.chainOf(a.name, a.slots, baseSegments, head, embed);
      // The adapter's own blocks: consecutive runs become one session each.
      for (let i = 0, part = 0; i < a.slots.length; ) {
        const slot = a.slots[i];
        if (slot.kind === 'base') {
          i = i + chain.parts[part].segment.layers;
          part++;
          continue;
        }
        const own: number[] = [];
        while (i < a.slots.length && a.slots[i].kind === 'own') own.push(i++);
        const session = await s.compile(buildCachedBlocks(config, own, new ParamBinder({ trainable: new Set(), load: a.load, lora: a.ownLora })));
        chain.parts.splice(part++, 0, { segment: { id: s.segmentCount++, session, layers: own.length, loraRank: 0 }, mask: null });
      }
      chain.batchKey = batchKey(chain, a.ownHead ? a.name : 'base', a.ownEmbedding ? a.name : 'base');
      s.chains.set(a.name, chain);
    }
    log.info({ baseSegments: baseSegments.size, sessions: s.sessions.length, adapters: adapters.map((a) => a.name) }, 'serving stack ready');
    return s;
  }

  /** Runs `t` new tokens per row (ids row-major [rows, t]) on top of `kv` (null: an empty cache). */
  async step(chain: Chain, ids: readonly number[], rows: number, t: number, kv: KvBatch | null, rowModels: readonly Chain[] = []): Promise<StepResult> {
    const { hiddenSize: h, numKvHeads: nkv, headDim: d } = this.config;
    const lens = kv ? kv.lens : new Array<number>(rows).fill(0);
    const slots = kv ? kv.slots : 0;
    let hidden: Float32Array = new Float32Array(rows * t * h);
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id * h >= chain.embed.length) throw new Error(`token id ${id} is outside the vocabulary`);
      hidden.set(chain.embed.subarray(id * h, (id + 1) * h), i * h);
    });
    const rope = this.rope.at(lens, t);
    const shared: Record<string, HostTensor> = {
      [SERVE_IO.cos]: { dtype: 'float32', shape: [rows, 1, t, d], data: rope.cos },
      [SERVE_IO.sin]: { dtype: 'float32', shape: [rows, 1, t, d], data: rope.sin },
      [SERVE_IO.mask]: { dtype: 'float32', shape: [rows, 1, 1, t, slots + t], data: stepMask(lens, slots, t, this.config.slidingWindow) },
    };
    const empty = new Float32Array(0);
    const present: LayerKv[] = [];
    for (const [i, { segment }] of chain.parts.entries()) {
      const feeds: Record<string, HostTensor> = { ...shared, [SERVE_IO.hidden]: { dtype: 'float32', shape: [rows, t, h], data: hidden } };
      if (segment.loraRank > 0) {
        // Each row keeps its own model's LoRA slice (rows without one: the chain's).
        const mask = new Float32Array(rows * segment.loraRank);
        for (let r = 0; r < rows; r++) mask.set((rowModels[r] ?? chain).parts[i].mask!, r * segment.loraRank);
        feeds[LORA_ROW_MASK] = { dtype: 'float32', shape: [rows, 1, segment.loraRank], data: mask };
      }
      for (let k = 0; k < segment.layers; k++) {
        const past = kv?.layers[present.length + k];
        feeds[SERVE_IO.pastKey(k)] = { dtype: 'float32', shape: [rows, nkv, slots, d], data: past?.key ?? empty };
        feeds[SERVE_IO.pastValue(k)] = { dtype: 'float32', shape: [rows, nkv, slots, d], data: past?.value ?? empty };
      }
      const out = await segment.session.run(feeds);
      hidden = out[SERVE_IO.hiddenOut].data as Float32Array;
      for (let k = 0; k < segment.layers; k++) {
        present.push({ key: out[SERVE_IO.presentKey(k)].data as Float32Array, value: out[SERVE_IO.presentValue(k)].data as Float32Array });
      }
    }
    const last = new Float32Array(rows * h);
    for (let r = 0; r < rows; r++) last.set(hidden.subarray(((r + 1) * t - 1) * h, (r + 1) * t * h), r * h);
    const out = await chain.head.run({ [SERVE_IO.hidden]: { dtype: 'float32', shape: [rows, h], data: last } });
    return { logits: out[SERVE_IO.logits].data as Float32Array, present };
  }

  async release(): Promise<void> {
    for (const s of this.sessions) await s.release();
  }

  private async compile(g: Parameters<typeof CompiledGraph.create>[0]): Promise<CompiledGraph> {
    // On the calling thread: a decode step feeds the whole KV cache, which the session thread would copy.
    const session = await CompiledGraph.create(g, { device: this.opts.device, threads: this.opts.threads, thread: false });
    this.sessions.push(session);
    return session;
  }

  private chainOf(
    name: string,
    slots: readonly LayerSlot[],
    base: Map<number, { segment: Segment; lora: StackedLora }>,
    head: CompiledGraph,
    embed: Float32Array,
  ): Chain {
    const parts: Chain['parts'] = [];
    for (const slot of slots) {
      if (slot.kind !== 'base') continue;
      const seg = base.get(slot.source);
      if (seg) parts.push({ segment: seg.segment, mask: maskRow(seg.lora, name) });
    }
    return { name, parts, head, embed, numLayers: slots.length, batchKey: '' };
  }
}

function range(start: number, end: number): number[] {
  return Array.from({ length: end - start }, (_, i) => start + i);
}
