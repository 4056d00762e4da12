// The short chaos run (npm run chaos is the long one): 3 workers, a fault every 2 steps once the last
// one is recovered, every kind of fault at least once; the exported weights equal the uninterrupted
// run's, every fault is survived, and only steps after a checkpoint are redone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runChaos } from './chaos/chaos.ts';

test('chaos: every kind of fault in one seeded 3-worker run, which ends with the uninterrupted weights', async (t) => {
  const r = await runChaos({ steps: 30, every: 2, seed: 1 });
  t.diagnostic(JSON.stringify({ ...r, faults: r.faults.map((f) => `${f.kind} after step ${f.afterStep}: ${f.recoverySeconds?.toFixed(1)} s`) }));
  assert.equal(r.exitCode, 0);
  assert.deepEqual([...new Set(r.faults.map((f) => f.kind))].sort(), ['kill coordinator', 'kill worker mid-save', 'kill worker mid-step', 'restart nats', 'stall worker']);
  assert.equal(r.survived, r.injected);
  assert.ok(r.weightsEqual, `max relative error ${r.maxRelError}`);
});
