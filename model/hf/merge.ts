// base + adapter → merged HF model: expand the base the way the run did, put the trained tensors in,
// fold LoRA into the weights.
import { expandConfig, expandedLoader, expandedRawLoader, expandedSource, expandRawConfig } from '../expand/expand.ts';
import { planFromSidecar, readExpansionSidecar } from '../expand/sidecar.ts';
import { readAdapter, writeMergedModel, type MergedLayout, type TrainedParts } from './export.ts';
import { openPretrained } from './pretrained.ts';

export function mergeAdapter(baseDir: string, adapterDir: string, outDir: string, layout: MergedLayout = {}): string {
  const base = openPretrained(baseDir);
  const adapter = readAdapter(adapterDir);
  const expansion = readExpansionSidecar(adapterDir);
  const readRaw = (n: string) => base.checkpoint.readRaw(n);
  let parts: TrainedParts = { config: base.config, raw: base.raw, readBase: readRaw, baseDtype: (n) => base.checkpoint.dtype(n), loadBase: base.load, trained: adapter.trained, lora: adapter.lora, expansion };
  if (expansion && base.config.numLayers === expansion.originalLayers) {
    const plan = planFromSidecar(expansion);
    parts = { ...parts, config: expandConfig(base.config, plan), raw: expandRawConfig(base.raw, plan), readBase: expandedRawLoader(readRaw, plan), baseDtype: (n) => base.checkpoint.dtype(expandedSource(n, plan).name), loadBase: expandedLoader(base.load, plan) };
  }
  if (parts.config.numLayers !== adapter.numLayers) {
    throw new Error(`${adapterDir} was trained on a ${adapter.numLayers}-layer stack but ${baseDir} gives ${parts.config.numLayers} layers; pass the base the adapter was trained from (${adapter.baseModel})`);
  }
  try {
    return writeMergedModel(outDir, parts, baseDir, layout);
  } finally {
    base.checkpoint.close();
  }
}
