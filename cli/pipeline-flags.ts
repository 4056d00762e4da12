// Flags of the pipelined commands that are not run-config fields.
import type { RunConfig } from '../recipe/run-config.ts';
import { UsageError, type Flags, type FlagSpecs } from './args.ts';

export const PIPELINE_FLAGS: FlagSpecs = {
  schedule: { type: 'string', description: 'micro-batch schedule: 1f1b or gpipe', default: '1f1b' },
  'micro-batches': { type: 'string', description: 'micro-batches per optimizer step (sets gradient_accumulation_steps)' },
  'ignore-mask': { type: 'boolean', description: 'plan the partition as if every block trained (baseline for the freeze-aware planner)' },
  'static-partition': { type: 'boolean', description: 'keep the first partition instead of re-planning when the freeze mask changes' },
};

export function pipelineOptions(f: Flags, run: RunConfig): { run: RunConfig; schedule: 'gpipe' | '1f1b'; microBatches: number; ignoreMask: boolean; staticPartition: boolean } {
  const schedule = f.str('schedule') ?? '1f1b';
  if (schedule !== 'gpipe' && schedule !== '1f1b') throw new UsageError(`--schedule must be 1f1b or gpipe, got '${schedule}'`);
  const microBatches = f.has('micro-batches') ? f.int('micro-batches') : run.gradient_accumulation_steps;
  if (microBatches < 1) throw new UsageError('--micro-batches must be at least 1');
  return { run: { ...run, gradient_accumulation_steps: microBatches }, schedule, microBatches, ignoreMask: f.bool('ignore-mask'), staticPartition: f.bool('static-partition') };
}
