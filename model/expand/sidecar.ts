// `llama_pro.json` beside an expanded checkpoint's config.json: which layers are new and what they were
// copied from. It is what tells a run which blocks to train, and where the base model is for
// distillation; the weights and config.json alone look like any other model.
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { newLayerIndices, planExpansion, type ExpansionPlan } from './expand.ts';
import { writeJsonAtomic } from '../../common/atomic-file.ts';

export const SIDECAR_FILE = 'llama_pro.json';

export interface ExpansionInfo {
  originalLayers: number;
  newBlocks: number;
  groups: number;
  /** Indices of the new blocks in the expanded stack, ascending. */
  newLayerIndices: number[];
  /** New block index -> the original block it was copied from. */
  sourceOf: Record<number, number>;
  /** The model the expansion was made from, as an absolute path when written by expandCheckpoint. */
  baseModel: string;
}

const count = z.number().int().nonnegative();
const sidecarSchema = z.looseObject({
  original_layers: count,
  new_blocks: count,
  groups: count,
  new_layer_indices: z.array(count),
  source_of: z.record(z.string().regex(/^\d+$/, 'keys must be layer indices'), count),
  base_model: z.string(),
});

export function expansionInfo(plan: ExpansionPlan, groups: number, baseModel: string): ExpansionInfo {
  const newIdx = newLayerIndices(plan);
  return {
    originalLayers: plan.length - newIdx.length,
    newBlocks: newIdx.length,
    groups,
    newLayerIndices: newIdx,
    sourceOf: Object.fromEntries(newIdx.map((i) => [i, plan[i].source])),
    baseModel,
  };
}

export function writeExpansionSidecar(dir: string, info: ExpansionInfo): string {
  const file = path.join(dir, SIDECAR_FILE);
  const json = {
    original_layers: info.originalLayers,
    new_blocks: info.newBlocks,
    groups: info.groups,
    new_layer_indices: info.newLayerIndices,
    source_of: info.sourceOf,
    base_model: info.baseModel,
  };
  writeJsonAtomic(file, json);
  return file;
}

/** The expansion recorded in `<dir>/llama_pro.json`, or null when the model was not expanded by propipe. */
export function readExpansionSidecar(dir: string): ExpansionInfo | null {
  const file = path.join(dir, SIDECAR_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: invalid JSON (${(err as Error).message})`, { cause: err });
  }
  const parsed = sidecarSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${file}: ${issue.path.map(String).join('.') || 'root'}: ${issue.message}`);
  }
  const s = parsed.data;
  const info: ExpansionInfo = {
    originalLayers: s.original_layers,
    newBlocks: s.new_blocks,
    groups: s.groups,
    newLayerIndices: s.new_layer_indices,
    sourceOf: Object.fromEntries(Object.entries(s.source_of).map(([k, v]) => [Number(k), v])),
    baseModel: s.base_model,
  };
  // The layout is a function of (L, P, G); a sidecar that disagrees with it was edited by hand or is
  // from another tool, and training the wrong blocks would silently damage the model.
  let expected: ExpansionInfo;
  try {
    expected = expansionInfo(planExpansion(info.originalLayers, info.newBlocks, info.groups), info.groups, info.baseModel);
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`, { cause: err });
  }
  if (JSON.stringify(expected.newLayerIndices) !== JSON.stringify(info.newLayerIndices) || !sameRecord(expected.sourceOf, info.sourceOf)) {
    throw new Error(
      `${file}: new_layer_indices/source_of do not match the interleaved layout for original_layers=${info.originalLayers}, ` +
        `new_blocks=${info.newBlocks}, groups=${info.groups} (expected new_layer_indices ${JSON.stringify(expected.newLayerIndices)})`,
    );
  }
  return info;
}

function sameRecord(a: Record<number, number>, b: Record<number, number>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => b[Number(k)] === a[Number(k)]);
}

/** The plan a sidecar describes, for loading an expanded range on the fly from the base model. */
export function planFromSidecar(info: ExpansionInfo): ExpansionPlan {
  return planExpansion(info.originalLayers, info.newBlocks, info.groups);
}
