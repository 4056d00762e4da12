// The loaded base and its adapters as ONNX Runtime sessions. Base blocks are cut into segments at
// every place an adapter departs from the base (a LLaMA Pro block inserted, a block retrained), so
// each base weight lives in exactly one session that every adapter runs; an adapter adds sessions
// for its own blocks only, and its LoRA factors on base blocks are fed as inputs of the shared
// segments (zeros for requests that do not use them).
import type { ModelConfig } from '../model/hf/config.ts';
import type { HostTensor } from '../model/graph/dtype.ts';
import { CompiledGraph, type Device } from '../model/graph/session.ts';
import { loraNames, ParamBinder, type LoraSpec, type WeightLoader } from '../model/llama/params.ts';
import { childLog } from '../common/log.ts';
import type { ServedAdapter } from './adapter.ts';
import { buildCachedBlocks, buildHead, SERVE_IO } from './cache-graph.ts';
import type { KvBatch, LayerKv } from './kv-batch.ts';
import { RopeCache, stepMask } from './step-inputs.ts';

const log = childLog({ component: 'serve' });

interface LoraInput {
  linear: string;
  rank: number;
  inp: number;
  out: number;
}

interface Segment {
  session: CompiledGraph;
  layers: number;
  /** Base linears of this segment that some adapter puts LoRA on (fed per chain). */
  lora: LoraInput[];
}

/** What one model name runs: its segments in order, its head and its embedding table. */
export interface Chain {
  name: string;
  parts: { segment: Segment; loraFeeds: Record<string, HostTensor> }[];
  head: CompiledGraph;
  embed: Float32Array;
  numLayers: number;
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

function linearShape(config: ModelConfig, linear: string): { out: number; inp: number } {
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  const h = config.hiddenSize;
  const m = config.intermediateSize;
  const kind = linear.slice(linear.lastIndexOf('.') + 1);
  const shapes: Record<string, { out: number; inp: number }> = {
    q_proj: { out: q, inp: h }, k_proj: { out: kv, inp: h }, v_proj: { out: kv, inp: h }, o_proj: { out: h, inp: q },
    gate_proj: { out: m, inp: h }, up_proj: { out: m, inp: h }, down_proj: { out: h, inp: m },
  };
  const s = shapes[kind];
  if (!s) throw new Error(`LoRA on '${linear}': not a linear layer of a Llama block`);
  return s;
}

export class ServedStack {
  readonly chains = new Map<string, Chain>();
  private readonly rope: RopeCache;
  private readonly sessions: CompiledGraph[] = [];

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
    const baseSegments = new Map<number, { end: number; segment: Segment }>();
    for (let k = 0; k + 1 < bounds.length; k++) {
      const [start, end] = [bounds[k], bounds[k + 1]];
      const lora = new Map<string, LoraInput>();
      for (const a of adapters) {
        for (const [linear, f] of a.baseLora) {
          const layer = Number(/^model\.layers\.(\d+)\./.exec(linear)![1]);
          if (layer < start || layer >= end) continue;
          lora.set(linear, { linear, rank: Math.max(f.rank, lora.get(linear)?.rank ?? 0), ...linearShape(config, linear) });
        }
      }
      const inputs = [...lora.values()];
      // One rank per segment graph: the largest; smaller adapters are zero-padded when fed.
      const rank = Math.max(0, ...inputs.map((i) => i.rank));
      inputs.forEach((i) => (i.rank = rank));
      const spec: LoraSpec | null = inputs.length ? { rank, alpha: rank, linears: new Set(inputs.map((i) => i.linear)) } : null;
      const trainable = new Set(inputs.flatMap((i) => Object.values(loraNames(i.linear))));
      const session = await s.compile(buildCachedBlocks(config, range(start, end), new ParamBinder({ trainable, load, lora: spec })));
      baseSegments.set(start, { end, segment: { session, layers: end - start, lora: inputs } });
    }
    const baseHead = await s.compile(buildHead(config, new ParamBinder({ trainable: new Set(), load })));
    const baseEmbed = load('model.embed_tokens.weight');

    s.chains.set(baseName, s.chainOf(baseName, Array.from({ length: L }, (_, i) => ({ kind: 'base', source: i })), baseSegments, null, baseHead, baseEmbed));
    for (const a of adapters) {
      const head = a.ownHead ? await s.compile(buildHead(config, new ParamBinder({ trainable: new Set(), load: a.load }))) : baseHead;
      const embed = a.ownEmbedding ? a.load('model.embed_tokens.weight') : baseEmbed;
      const chain = s.chainOf(a.name, a.slots, baseSegments, a, head, embed);
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
        chain.parts.splice(part++, 0, { segment: { session, layers: own.length, lora: [] }, loraFeeds: {} });
      }
      s.chains.set(a.name, chain);
    }
    log.info({ baseSegments: baseSegments.size, sessions: s.sessions.length, adapters: adapters.map((a) => a.name) }, 'serving stack ready');
    return s;
  }

  /** Runs `t` new tokens per row (ids row-major [rows, t]) on top of `kv` (null: an empty cache). */
  async step(chain: Chain, ids: readonly number[], rows: number, t: number, kv: KvBatch | null): Promise<StepResult> {
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
    for (const { segment, loraFeeds } of chain.parts) {
      const feeds: Record<string, HostTensor> = { ...shared, ...loraFeeds, [SERVE_IO.hidden]: { dtype: 'float32', shape: [rows, t, h], data: hidden } };
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
    const session = await CompiledGraph.create(g, { device: this.opts.device, threads: this.opts.threads });
    this.sessions.push(session);
    return session;
  }

  private chainOf(
    name: string,
    slots: ServedAdapter['slots'],
    base: Map<number, { end: number; segment: Segment }>,
    adapter: ServedAdapter | null,
    head: CompiledGraph,
    embed: Float32Array,
  ): Chain {
    const parts: Chain['parts'] = [];
    for (const slot of slots) {
      if (slot.kind !== 'base') continue;
      const seg = base.get(slot.source);
      if (seg) parts.push({ segment: seg.segment, loraFeeds: loraFeeds(seg.segment.lora, adapter) });
    }
    return { name, parts, head, embed, numLayers: slots.length };
  }
}

function range(start: number, end: number): number[] {
  return Array.from({ length: end - start }, (_, i) => start + i);
}

/** The LoRA inputs of a base segment for one chain: the adapter's factors zero-padded to the segment's rank. */
function loraFeeds(inputs: readonly LoraInput[], adapter: ServedAdapter | null): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = {};
  for (const i of inputs) {
    const f = adapter?.baseLora.get(i.linear);
    const a = new Float32Array(i.rank * i.inp);
    const b = new Float32Array(i.out * i.rank);
    if (f) {
      a.set(f.a);
      for (let o = 0; o < i.out; o++) b.set(f.b.subarray(o * f.rank, (o + 1) * f.rank), o * i.rank);
    }
    const names = loraNames(i.linear);
    feeds[names.a] = { dtype: 'float32', shape: [i.rank, i.inp], data: a };
    feeds[names.b] = { dtype: 'float32', shape: [i.out, i.rank], data: b };
  }
  return feeds;
}
