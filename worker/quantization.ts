// Which frozen weights a run stores in 4 bits: the base model's linear layers that never train.
// Tensors that train in some stage (new blocks, unfrozen groups) stay float even while frozen, so a
// later stage never starts from rounded weights.
import type { QuantizedMatMul } from '../model/llama/params.ts';
import { quantizedBytes } from '../model/quant/quant4.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import type { TrainingModel } from './training-model.ts';

/** The 4-bit products of a rank's programs, over the process's one copy of the codes (model.quant4). */
export function quantizationFor(model: TrainingModel): QuantizedMatMul | null {
  const store = model.quant4;
  if (!store) return null;
  const trains = new Set(model.plan.everTrainable);
  return {
    matmul: (g, x, name, out, inp) => (trains.has(name) ? null : store.matmul(g, x, name, out, inp)),
    tensor: (input) => store.tensor(input),
  };
}

export interface MemoryReport {
  frozenLinearBytes: number;
  frozenLinearFloat32Bytes: number;
  /** Trainable tensors, their gradients and two AdamW moments, in float32. */
  trainableStateBytes: number;
}

export function memoryReport(run: RunConfig, model: TrainingModel, trainableParams: number): MemoryReport {
  const trains = new Set(model.plan.everTrainable);
  const fp = quantizedBytes(model.config, { blockSize: run.quant_block_size, frozen: (n) => !trains.has(n) });
  return {
    frozenLinearBytes: run.quantize === '4bit' ? fp.quantizedBytes : fp.float32Bytes,
    frozenLinearFloat32Bytes: fp.float32Bytes,
    trainableStateBytes: trainableParams * 4 * 4,
  };
}
