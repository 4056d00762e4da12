// The freeze mask of one stage: which parts of the model train. The stage plan (recipe/stages.ts)
// produces it; the partition planner, the rank runtime and the stage signal on the wire take it as is.
import { layerOf } from '../model/llama/param-specs.ts';
import type { BlockRange } from '../model/llama/range-graph.ts';

/** What trains in a decoder layer: nothing, its own weights, or only the LoRA adapters on its linears. */
export type LayerState = 'frozen' | 'trainable' | 'lora';

export interface FreezeMask {
  /** One entry per decoder layer of the trained stack. */
  layers: LayerState[];
  /** model.embed_tokens trains. */
  embed: boolean;
  /** The final norm and lm_head train (together: they are one unit in every recipe). */
  head: boolean;
}

export function frozenMask(numLayers: number): FreezeMask {
  return { layers: new Array<LayerState>(numLayers).fill('frozen'), embed: false, head: false };
}

export function layerTrains(mask: FreezeMask, layer: number): boolean {
  return mask.layers[layer] !== 'frozen';
}

/** Whether the tensor `name` (a weight or a LoRA factor) is in a part of the model the mask trains. */
export function maskCovers(mask: FreezeMask, name: string): boolean {
  const l = layerOf(name);
  if (l === 'embed') return mask.embed;
  if (l === 'norm' || l === 'head') return mask.head;
  return layerTrains(mask, l);
}

/** Whether anything in the block range trains under `mask`. */
export function rangeTrains(mask: FreezeMask, r: BlockRange): boolean {
  if ((r.embed && mask.embed) || (r.head && mask.head)) return true;
  for (let i = r.start; i < r.end; i++) if (layerTrains(mask, i)) return true;
  return false;
}

export function sameMask(a: FreezeMask, b: FreezeMask): boolean {
  return a.embed === b.embed && a.head === b.head && a.layers.length === b.layers.length && a.layers.every((s, i) => s === b.layers[i]);
}

/** e.g. "embed, 0-3 trainable, 4-5 lora, head" (frozen parts are left out). */
export function describeMask(mask: FreezeMask): string {
  const parts: string[] = mask.embed ? ['embed'] : [];
  let i = 0;
  while (i < mask.layers.length) {
    let j = i;
    while (j + 1 < mask.layers.length && mask.layers[j + 1] === mask.layers[i]) j++;
    if (mask.layers[i] !== 'frozen') parts.push(`${i === j ? i : `${i}-${j}`} ${mask.layers[i]}`);
    i = j + 1;
  }
  if (mask.head) parts.push('head');
  return parts.length ? parts.join(', ') : 'all frozen';
}
