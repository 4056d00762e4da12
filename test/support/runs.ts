// Reading finished runs back: the training losses of metrics.jsonl, and exported weights compared.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { openCheckpoint } from '../../model/hf/checkpoint.ts';
import { maxRelError } from './compare.ts';

export const losses = (dir: string): number[] =>
  fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => typeof r.loss === 'number' && r.eval_loss === undefined).map((r) => r.loss as number);

export function sameWeights(a: string, b: string): void {
  const ca = openCheckpoint(a);
  const cb = openCheckpoint(b);
  assert.deepEqual(ca.names().sort(), cb.names().sort());
  for (const n of ca.names()) assert.ok(maxRelError(cb.readF32(n), ca.readF32(n)) <= 1e-5, `${n}: ${maxRelError(cb.readF32(n), ca.readF32(n))}`);
}

/** A worker's log records of message `msg` (launch's `onLine` lines, tagged `w0 `...), each with the blocks it was assigned just before. */
export function recordsPerAssignment(lines: string[], worker: string, msg: string): { assigned: number[]; rec: Record<string, unknown> }[] {
  const out: { assigned: number[]; rec: Record<string, unknown> }[] = [];
  let assigned: number[] = [];
  for (const l of lines.filter((x) => x.startsWith(`${worker} `) && x.includes('{'))) {
    const rec = JSON.parse(l.slice(l.indexOf('{')));
    if (rec.msg === 'assigned') {
      const [s, e] = (rec.blocks as string).split('..').map(Number);
      assigned = Array.from({ length: e - s + 1 }, (_, i) => s + i);
    }
    if (rec.msg === msg) out.push({ assigned, rec });
  }
  return out;
}
