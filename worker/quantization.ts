// Which frozen weights a run stores in 4 bits: the base model's linear layers that never train.
import type { QuantizedMatMul } from '../model/llama/params.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import type { TrainingModel } from './training-model.ts';

export function quantizationFor(run: RunConfig, _model: TrainingModel): QuantizedMatMul | null {
  if (run.quantize === 'none') return null;
  throw new Error('quantize: 4bit is being wired in');
}
