// Stage plans: the trainable units (whole blocks, LLaMA Pro new blocks, or LoRA adapters) are cut into
// block groups, and each stage's freeze mask says which groups train. This is pure data: the local
// trainer and every pipeline rank derive the same mask from it.
import type { ModelConfig } from '../model/hf/config.ts';
import { loraNames } from '../model/llama/params.ts';
import { layerParamSpecs } from '../model/llama/param-specs.ts';
import { describeMask, frozenMask, type FreezeMask } from './freeze-mask.ts';
import type { RunConfig } from './run-config.ts';

/** What each layer of the trained model is: an original block, or a LLaMA Pro copy of one. */
export type LayerKind = { kind: 'original' | 'new'; source: number };

export interface Stage {
  index: number;
  /** Block groups trainable in this stage. */
  groups: number[];
  /** Layer indices whose units train. */
  layers: number[];
  /** HF names of every tensor that receives gradients in this stage. */
  trainable: string[];
  /** The same stage per part of the model: what the partition planner, the ranks and the wire use. */
  mask: FreezeMask;
}

export interface StagePlan {
  /** Layer indices of each block group (the units the stages walk over). */
  groups: number[][];
  stages: Stage[];
  /** Every tensor that trains in some stage (the optimizer and checkpoint set). */
  everTrainable: string[];
  /** Linear layers that carry LoRA adapters. */
  loraLinears: string[];
}

/** Module suffixes of a block's linear layers (LoRA targets). */
export const LINEARS = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'];

export function parseTargets(spec: string): Set<string> {
  const known = new Set(LINEARS.map((l) => l.split('.')[1]));
  const targets = new Set(spec.split(',').map((s) => s.trim()).filter(Boolean));
  if (targets.has('all-linear')) return known;
  for (const t of targets) if (!known.has(t)) throw new Error(`lora_targets: '${t}' is not one of ${[...known].join(', ')} (or all-linear)`);
  return targets;
}

/** Default group size: about four blocks, but at least two stages when there are two units. */
function defaultGroupSize(units: number): number {
  return Math.max(1, Math.min(4, Math.ceil(units / 2)));
}

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export function stageOrder(spec: string, groups: number): number[][] {
  const all = Array.from({ length: groups }, (_, i) => i);
  if (spec === 'none') return [all];
  if (spec === 'bottom-up') return all.map((g) => [g]);
  if (spec === 'top-down') return [...all].reverse().map((g) => [g]);
  const order = spec.split(',').map((s) => s.trim());
  const seen = new Set<number>();
  return order.map((s) => {
    const g = Number(s);
    if (!Number.isInteger(g) || g < 0 || g >= groups) throw new Error(`stage_order: '${s}' is not a group index in 0..${groups - 1} (or use bottom-up, top-down, none)`);
    if (seen.has(g)) throw new Error(`stage_order: group ${g} appears twice`);
    seen.add(g);
    return [g];
  });
}

/** The layers a LLaMA Pro new block serves: the originals of its group, up to the previous new block. */
function regionOf(layout: LayerKind[], newLayer: number): number[] {
  const region: number[] = [];
  for (let l = newLayer - 1; l >= 0 && layout[l].kind === 'original'; l--) region.unshift(l);
  return region;
}

export function planStages(run: RunConfig, config: ModelConfig, layout: LayerKind[]): StagePlan {
  if (layout.length !== config.numLayers) throw new Error(`layout has ${layout.length} layers, config ${config.numLayers}`);
  const pro = run.train_type === 'llamapro';
  const units = layout.map((l, i) => ({ ...l, i })).filter((l) => !pro || l.kind === 'new').map((l) => l.i);
  const byRatio = run.stage_ratio === undefined ? undefined : Math.max(1, Math.round(run.stage_ratio * units.length));
  const size = run.blocks_per_group ?? byRatio ?? defaultGroupSize(units.length);
  const groups = chunk(units, size);
  const windows = stageOrder(run.stage_order, groups.length);
  const targets = run.lora_rank > 0 ? parseTargets(run.lora_targets) : new Set<string>();

  const loraOf = (layer: number) => LINEARS.filter((m) => targets.has(m.split('.')[1])).map((m) => `model.layers.${layer}.${m}`);
  const blockTensors = (layer: number) => layerParamSpecs(config, layer).map((s) => s.name);
  const headTensors = ['model.norm.weight', ...(config.tieWordEmbeddings ? [] : ['lm_head.weight'])];
  const loraLinears = new Set<string>();

  const unitTensors = (layer: number): string[] => {
    if (run.train_type === 'full') return blockTensors(layer);
    if (run.train_type === 'lora') {
      const ls = loraOf(layer);
      ls.forEach((l) => loraLinears.add(l));
      return ls.flatMap((l) => Object.values(loraNames(l)));
    }
    const extra = regionOf(layout, layer).flatMap(loraOf);
    extra.forEach((l) => loraLinears.add(l));
    return [...blockTensors(layer), ...extra.flatMap((l) => Object.values(loraNames(l)))];
  };

  const stages: Stage[] = [];
  windows.forEach((_, k) => {
    const active = run.stage_mode === 'cumulative' ? [...new Set(windows.slice(0, k + 1).flat())] : windows[k];
    const layers = active.flatMap((g) => groups[g]).sort((a, b) => a - b);
    const trainable = layers.flatMap(unitTensors);
    const mask = frozenMask(config.numLayers);
    for (const l of layers) {
      mask.layers[l] = run.train_type === 'lora' ? 'lora' : 'trainable';
      if (run.train_type === 'llamapro' && targets.size > 0) for (const r of regionOf(layout, l)) mask.layers[r] = 'lora';
    }
    if (run.train_type === 'full') {
      mask.embed = layers.includes(0);
      mask.head = layers.includes(config.numLayers - 1);
      if (mask.embed) trainable.unshift('model.embed_tokens.weight');
      if (mask.head) trainable.push(...headTensors);
    } else if (run.train_head_last_stage && k === windows.length - 1) {
      mask.head = true;
      trainable.push(...headTensors);
    }
    stages.push({ index: k, groups: active, layers, trainable, mask });
  });
  const everTrainable = [...new Set(stages.flatMap((s) => s.trainable))];
  return { groups, stages, everTrainable, loraLinears: [...loraLinears] };
}

export function describeStage(plan: StagePlan, s: Stage): string {
  return `stage ${s.index + 1}/${plan.stages.length}: groups [${s.groups.join(',')}] → ${describeMask(s.mask)}, ${s.trainable.length} tensors trainable`;
}
