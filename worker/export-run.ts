// The end of a run: the trained parts in output_dir/adapter (final/ is written by worker/export-ranks.ts,
// each rank its own shards).
import path from 'node:path';
import { expandedRawLoader, expandedSource } from '../model/expand/expand.ts';
import { writeAdapter, type TrainedParts } from '../model/hf/export.ts';
import type { LoraSpec } from '../model/llama/params.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import type { TrainingModel } from './training-model.ts';

export function trainedParts(model: TrainingModel, values: ReadonlyMap<string, Float32Array>, lora: LoraSpec | null): TrainedParts {
  const readRaw = (n: string) => model.base.checkpoint.readRaw(n);
  return {
    config: model.config,
    raw: model.raw,
    readBase: model.onTheFly ? expandedRawLoader(readRaw, model.onTheFly) : readRaw,
    baseDtype: (n) => model.base.checkpoint.dtype(model.onTheFly ? expandedSource(n, model.onTheFly).name : n),
    loadBase: model.load,
    trained: values,
    lora: lora ? { rank: lora.rank, alpha: lora.alpha, linears: [...lora.linears] } : null,
    expansion: model.expansion,
  };
}

export function writeRunAdapter(run: RunConfig, model: TrainingModel, parts: TrainedParts): string {
  return writeAdapter(path.join(run.output_dir, 'adapter'), parts, {
    baseModel: path.resolve(run.model),
    lora: parts.lora,
    expansion: model.expansion,
    run: { train_type: run.train_type, stages: model.plan.stages.map((s) => ({ layers: s.layers, trainable: s.trainable })), config: run },
  });
}
