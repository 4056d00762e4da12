// What a recovered run must look like in its metrics.jsonl: after a failure the job goes back to its
// last committed checkpoint c and goes on with step c + 1 — step 1 only while no checkpoint exists —
// so only the steps after c (at most one checkpoint interval) are trained twice, and every step of the
// run is trained.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

export type MetricsRecord = Record<string, unknown> & { step?: number; loss?: number | null; event?: string; time?: string };

export function readMetrics(outputDir: string): MetricsRecord[] {
  return fs.readFileSync(path.join(outputDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as MetricsRecord);
}

/** The training-step records (evaluations and events left out), in the order they were written. */
export function stepRecords(records: MetricsRecord[]): MetricsRecord[] {
  return records.filter((r) => typeof r.step === 'number' && 'loss' in r);
}

export interface Continuation {
  /** Each time the step count went back: the last step recorded before, and the step trained next. */
  restarts: { from: number; to: number }[];
  /** Steps trained more than once. */
  redone: number;
}

/**
 * Checks that the run trained steps 1..total, and that every restart resumed from the last checkpoint
 * (step c + 1, c a multiple of `saveSteps` at most one checkpoint interval before the last step done).
 */
export function assertContinuation(records: MetricsRecord[], total: number, saveSteps: number, stageEnds: number[] = []): Continuation {
  // Checkpoints are committed every `saveSteps` and at the end of every stage (the re-plan saves).
  const committed = (c: number) => c % saveSteps === 0 || stageEnds.includes(c);
  const previous = (from: number) => Math.max(...[from - (from % saveSteps), ...stageEnds.filter((e) => e <= from)]);
  const steps = stepRecords(records).map((r) => r.step as number);
  const restarts: { from: number; to: number }[] = [];
  for (let i = 1; i < steps.length; i++) {
    if (steps[i] === steps[i - 1] + 1) continue;
    assert.ok(steps[i] <= steps[i - 1], `step ${steps[i]} follows step ${steps[i - 1]}: a step was skipped (${steps.join(',')})`);
    restarts.push({ from: steps[i - 1], to: steps[i] });
  }
  for (const r of restarts) {
    const c = r.to - 1;
    assert.ok(c >= 0 && committed(c), `after step ${r.from} the run went on with step ${r.to}, not a committed checkpoint + 1 (checkpoints every ${saveSteps} and at ${stageEnds}): ${steps.join(',')}`);
    // The checkpoint of step `from` may have been the one lost; the one before it cannot have been.
    const last = previous(r.from);
    assert.ok(c === last || c === previous(last - 1), `after step ${r.from} the run went back to step ${r.to}: further than the last checkpoint (${steps.join(',')})`);
  }
  assert.equal(steps[0], 1);
  assert.equal(steps[steps.length - 1], total, `the run ends at step ${total}`);
  const redone = restarts.reduce((n, r) => n + (r.from - r.to + 1), 0);
  assert.equal(steps.length, total + redone, `${steps.length} step records for ${total} steps and ${redone} redone: ${steps.join(',')}`);
  return { restarts, redone };
}
