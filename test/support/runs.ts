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
