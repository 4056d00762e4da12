// Which frozen weights a run stores in 4 bits: the base model's linear layers that never train.
// Tensors that train in some stage (new blocks, unfrozen groups) stay float even while frozen, so a
// later stage never starts from rounded weights.
import type { QuantizedMatMul } from '../model/llama/params.ts';
import { quantizedLinear } from '../model/quant4.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import type { TrainingModel } from './training-model.ts';

export function quantizationFor(run: RunConfig, model: TrainingModel): QuantizedMatMul | null {
  if (run.quantize === 'none') return null;
  const trains = new Set(model.plan.everTrainable);
  const matmul = quantizedLinear(model.load, run.quant_block_size);
  return (g, x, name, out, inp) => (trains.has(name) ? null : matmul(g, x, name, out, inp));
}
