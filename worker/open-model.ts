// A model directory that does not match its config.json (a tensor missing or of another shape) will
// never load: every entry point (a worker, `propipe train`) checks all of it from the file headers
// before training, and stops with a permanent error (exit 4) instead of failing at some later stage.
import { PermanentError } from '../common/errors.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import { prepareModel, type TrainingModel } from './training-model.ts';

export function openTrainingModel(run: RunConfig): TrainingModel {
  try {
    const model = prepareModel(run);
    model.base.checkAll();
    return model;
  } catch (err) {
    throw new PermanentError((err as Error).message);
  }
}
