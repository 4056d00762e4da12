// Writes a LLaMA Pro expanded model as an ordinary HF model directory (config.json, safetensors,
// tokenizer) plus llama_pro.json, so transformers, `propipe eval` and a training run all load it as is.
import path from 'node:path';
import { copyCarriedFiles } from '../hf/carried-files.ts';
import { ensureEmptyTarget, writeDirAtomic } from '../../common/atomic-dir.ts';
import { writeConfig, type ModelConfig } from '../hf/config.ts';
import { expandConfig, expandRawConfig, expandWeights, planExpansion, type ExpansionPlan } from './expand.ts';
import { expansionInfo, readExpansionSidecar, SIDECAR_FILE, writeExpansionSidecar, type ExpansionInfo } from './sidecar.ts';
import { log } from '../../common/log.ts';
import { paramSpecs } from '../llama/param-specs.ts';
import { openPretrained } from '../hf/pretrained.ts';
import { writeCheckpoint, type Checkpoint } from '../hf/checkpoint.ts';


export interface ExpandResult {
  dir: string;
  config: ModelConfig;
  plan: ExpansionPlan;
  info: ExpansionInfo;
}


// A checkpoint missing a tensor would otherwise be expanded into a model that fails only when trained.
function checkComplete(dir: string, config: ModelConfig, checkpoint: Checkpoint): void {
  for (const spec of paramSpecs(config)) {
    if (!checkpoint.has(spec.name)) throw new Error(`${dir}: the checkpoint has no tensor '${spec.name}' (is it a ${config.arch} model with ${config.numLayers} layers?)`);
    const got = checkpoint.shape(spec.name);
    if (got.join() !== spec.shape.join()) throw new Error(`${dir}: tensor '${spec.name}' has shape [${got}], config.json implies [${spec.shape}]`);
  }
}

/**
 * Expands the model in `srcDir` by `newBlocks` blocks in `groups` groups (default: one block per group)
 * into `outDir`, which must not exist or be empty. Everything is written into a temp directory beside
 * `outDir` and renamed into place, so a failure leaves no partial model behind.
 */
export function expandCheckpoint(srcDir: string, outDir: string, newBlocks: number, groups: number = newBlocks): ExpandResult {
  const out = path.resolve(outDir);
  ensureEmptyTarget(out);
  const src = openPretrained(srcDir);
  try {
    const plan = planExpansion(src.config.numLayers, newBlocks, groups);
    checkComplete(srcDir, src.config, src.checkpoint);
    if (readExpansionSidecar(srcDir)) {
      log.warn({ srcDir }, `${srcDir} is itself an expanded model; the new ${SIDECAR_FILE} records only this expansion`);
    }
    const config = expandConfig(src.config, plan);
    const info = expansionInfo(plan, groups, path.resolve(srcDir));

    writeDirAtomic(out, (tmp) => {
      writeConfig(tmp, config, expandRawConfig(src.raw, plan));
      writeCheckpoint(tmp, expandWeights(src.checkpoint, plan));
      copyCarriedFiles(srcDir, tmp);
      writeExpansionSidecar(tmp, info);
    });
    log.info({ src: srcDir, out, layers: config.numLayers, newLayers: info.newLayerIndices }, 'expanded model written');
    return { dir: out, config, plan, info };
  } finally {
    src.checkpoint.close();
  }
}
