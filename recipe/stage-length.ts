// How many optimizer steps a stage lasts, from the run config and the size of the training set.
import { batchesPerEpoch } from './batch.ts';
import type { RunConfig } from './run-config.ts';

export function stageSteps(run: RunConfig, trainExamples: number): number {
  if (run.steps_per_stage) return run.steps_per_stage;
  const perEpoch = Math.max(1, Math.ceil(batchesPerEpoch(trainExamples, run.per_device_train_batch_size, false) / run.gradient_accumulation_steps));
  return Math.max(1, Math.round((run.epochs_per_stage ?? run.num_train_epochs) * perEpoch));
}
