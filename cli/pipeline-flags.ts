// Flags of the pipelined commands that are not run-config fields.
import type { RunConfig } from '../recipe/run-config.ts';
import { isScheduleKind, SCHEDULE_KINDS, type ScheduleKind } from '../recipe/schedule-kind.ts';
import { UsageError, type Flags, type FlagSpecs } from './args.ts';

export const PIPELINE_FLAGS: FlagSpecs = {
  schedule: { type: 'string', description: 'micro-batch schedule: 1f1b, gpipe or zb1 (zero-bubble ZB-H1: weight gradients deferred into the bubbles)', default: '1f1b' },
  'micro-batches': { type: 'string', description: 'micro-batches per optimizer step (sets gradient_accumulation_steps)' },
  'ignore-mask': { type: 'boolean', description: 'plan the partition as if every block trained (baseline for the freeze-aware planner)' },
  'static-partition': { type: 'boolean', description: 'keep the first partition instead of re-planning when the freeze mask changes' },
};

export function pipelineOptions(f: Flags, run: RunConfig): { run: RunConfig; schedule: ScheduleKind; microBatches: number; ignoreMask: boolean; staticPartition: boolean } {
  const schedule = f.str('schedule') ?? '1f1b';
  if (!isScheduleKind(schedule)) throw new UsageError(`--schedule must be one of ${SCHEDULE_KINDS.join(', ')}, got '${schedule}'`);
  const microBatches = f.has('micro-batches') ? f.int('micro-batches') : run.gradient_accumulation_steps;
  if (microBatches < 1) throw new UsageError('--micro-batches must be at least 1');
  return { run: { ...run, gradient_accumulation_steps: microBatches }, schedule, microBatches, ignoreMask: f.bool('ignore-mask'), staticPartition: f.bool('static-partition') };
}
