// An `adapter/` directory from `propipe train`, read as a layer plan over the loaded base: which
// layers of the adapted stack are base layers (shared, never copied), which are the adapter's own
// (LLaMA Pro new blocks, or base blocks it retrained), and which base linears get LoRA terms.
import path from 'node:path';
import type { ModelConfig } from '../model/hf/config.ts';
import { expandedSource, planExpansion, type ExpansionPlan } from '../model/expand/expand.ts';
import { readExpansionSidecar } from '../model/expand/sidecar.ts';
import { readAdapter } from '../model/hf/export.ts';
import { loraNames, type LoraSpec, type WeightLoader } from '../model/llama/params.ts';
import { log } from '../common/log.ts';

export type LayerSlot =
  /** Base layer `source`, run by the shared base sessions. */
  | { kind: 'base'; source: number }
  /** Layer `index` of the adapted stack, with weights of the adapter's own (new or retrained block). */
  | { kind: 'own'; index: number };

export interface LoraFactor {
  /** [rank, in] and [out, rank], the scale alpha/rank folded into B. */
  a: Float32Array;
  b: Float32Array;
  rank: number;
}

export interface ServedAdapter {
  name: string;
  dir: string;
  slots: LayerSlot[];
  /** Loader for the adapter's own layers and head parts, under the adapted stack's names. */
  load: WeightLoader;
  /** LoRA on the adapter's own layers (baked into their sessions), adapted-stack names. */
  ownLora: LoraSpec | null;
  /** LoRA on base layers, keyed by the base linear name (model.layers.<source>.self_attn.q_proj). */
  baseLora: Map<string, LoraFactor>;
  /** Parts outside the layers the adapter retrained: embedding, final norm, lm_head. */
  ownHead: boolean;
  ownEmbedding: boolean;
}

const LAYER = /^model\.layers\.(\d+)\./;
const LORA = /\.lora_[AB]\.weight$/;

/** Reads `dir` and checks it against the base it will be served on. */
export function loadServedAdapter(name: string, dir: string, base: ModelConfig, baseLoad: WeightLoader, baseDir: string): ServedAdapter {
  const a = readAdapter(dir);
  const expansion = readExpansionSidecar(dir);
  const identity = (n: number): ExpansionPlan => Array.from({ length: n }, (_, i) => ({ kind: 'original' as const, source: i }));
  let plan: ExpansionPlan;
  // A base of the adapter's depth (no expansion, or a checkpoint already expanded by `propipe expand`)
  // maps layer to layer: the adapter's trained blocks replace its zero-initialized copies.
  if (base.numLayers === a.numLayers) plan = identity(base.numLayers);
  else if (expansion && expansion.originalLayers === base.numLayers) plan = planExpansion(expansion.originalLayers, expansion.newBlocks, expansion.groups);
  else {
    const from = expansion ? `a ${expansion.originalLayers}-layer base expanded to ${a.numLayers} layers` : `a ${a.numLayers}-layer model`;
    throw new Error(`adapter ${dir} was trained on ${from}, but --model has ${base.numLayers} layers; serve it with the base it was trained from (${a.baseModel})`);
  }
  if (plan.length !== a.numLayers) throw new Error(`adapter ${dir}: llama_pro.json describes ${plan.length} layers, propipe_adapter.json ${a.numLayers}; re-export the run`);
  if (path.resolve(a.baseModel) !== path.resolve(baseDir)) {
    log.warn({ adapter: dir, trainedOn: a.baseModel, servedOn: baseDir }, 'adapter was trained on another base path; serving it on --model (layer counts match)');
  }

  // A layer whose own weights (not LoRA factors) were trained, or that is new, belongs to the adapter.
  const retrained = new Set<number>();
  let ownHead = false;
  let ownEmbedding = false;
  for (const n of a.trained.keys()) {
    if (LORA.test(n)) continue;
    const m = LAYER.exec(n);
    if (m) retrained.add(Number(m[1]));
    else if (n === 'model.embed_tokens.weight') ownEmbedding = true;
    else ownHead = true;
  }
  if (ownEmbedding && base.tieWordEmbeddings) ownHead = true;
  const slots: LayerSlot[] = plan.map((l, i) => (l.kind === 'new' || retrained.has(i) ? { kind: 'own', index: i } : { kind: 'base', source: l.source }));

  // The adapter's view of the whole stack: its tensors first, the base (expanded on the fly) beneath.
  const load: WeightLoader = (n) => {
    const t = a.trained.get(n);
    if (t) return t;
    const src = expandedSource(n, plan);
    const data = baseLoad(src.name);
    return src.zero ? new Float32Array(data.length) : data;
  };

  const baseLora = new Map<string, LoraFactor>();
  const ownLinears = new Set<string>();
  const lora = a.lora;
  for (const linear of lora?.linears ?? []) {
    const index = Number(LAYER.exec(linear)?.[1]);
    const slot = slots[index];
    if (!slot) throw new Error(`adapter ${dir}: LoRA on ${linear}, outside the ${slots.length}-layer stack`);
    if (slot.kind === 'own') {
      ownLinears.add(linear);
      continue;
    }
    const names = loraNames(linear);
    const fa = a.trained.get(names.a);
    const fb = a.trained.get(names.b);
    if (!fa || !fb) throw new Error(`adapter ${dir}: LoRA factors of ${linear} are missing from adapter_model.safetensors; re-export the run`);
    const scale = lora!.alpha / lora!.rank;
    baseLora.set(linear.replace(LAYER, `model.layers.${slot.source}.`), { a: fa, b: fb.map((v) => v * scale), rank: lora!.rank });
  }
  const ownLora = lora && ownLinears.size > 0 ? { rank: lora.rank, alpha: lora.alpha, linears: ownLinears } : null;
  return { name, dir, slots, load, ownLora, baseLora, ownHead, ownEmbedding };
}

/** Parses `NAME=DIR`. */
export function parseAdapterFlag(spec: string): { name: string; dir: string } {
  const eq = spec.indexOf('=');
  if (eq <= 0 || eq === spec.length - 1) throw new Error(`--adapter takes NAME=DIR (e.g. --adapter sql=runs/sql/adapter), got '${spec}'`);
  return { name: spec.slice(0, eq), dir: spec.slice(eq + 1) };
}
