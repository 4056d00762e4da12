// Pipeline schedules are data: printed, checked for small P and M, and simulated for deadlocks and
// bubbles.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatSchedule, roles, schedule, simulate, type ScheduleKind } from '../recipe/schedule.ts';

const plans = (kind: ScheduleKind, backward: boolean[], m: number, slack = 0) => roles(backward).map((r) => schedule(kind, r, m, slack));

test('GPipe and 1F1B orders for P=3, M=4 (printed)', () => {
  const gpipe = plans('gpipe', [true, true, true], 4).map(formatSchedule);
  assert.deepEqual(gpipe, ['F0 F1 F2 F3 B0 B1 B2 B3', 'F0 F1 F2 F3 B0 B1 B2 B3', 'F0 F1 F2 F3 B0 B1 B2 B3']);
  const ofob = plans('1f1b', [true, true, true], 4).map(formatSchedule);
  assert.deepEqual(ofob, ['F0 F1 F2 B0 F3 B1 B2 B3', 'F0 F1 B0 F2 B1 F3 B2 B3', 'F0 B0 F1 B1 F2 B2 F3 B3']);
});

test('a frozen prefix rank only runs forwards and its neighbour sends it no gradients', () => {
  const p = plans('1f1b', [false, true, true], 3);
  assert.equal(formatSchedule(p[0]), 'F0 F1 F2');
  assert.ok(!p[0].some((a) => a.op === 'recv_grad'));
  assert.ok(!p[1].some((a) => a.op === 'send_grad'), 'rank 1 does not send gradients to the frozen prefix');
  assert.ok(p[1].some((a) => a.op === 'backward'));
});

test('every schedule completes without deadlock; the bubble matches (P-1)/(M+P-1) for uniform stages', () => {
  for (const kind of ['gpipe', '1f1b'] as const) {
    for (let P = 1; P <= 4; P++) {
      for (const M of [1, 2, 4, 8]) {
        const sim = simulate(plans(kind, new Array(P).fill(true), M), { forward: new Array(P).fill(1), backward: new Array(P).fill(2) });
        const theory = (P - 1) / (M + P - 1);
        assert.ok(Math.abs(sim.bubble - theory) < 1e-9, `${kind} P=${P} M=${M}: ${sim.bubble} vs ${theory}`);
      }
    }
  }
});

test('each micro-batch is forwarded once and backwarded once per rank', () => {
  for (const p of plans('1f1b', [true, true, true, true], 6)) {
    for (const op of ['forward', 'backward'] as const) {
      assert.deepEqual(p.filter((a) => a.op === op).map((a) => a.mb).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5]);
    }
  }
});

test('1F1B slack: ranks below the last run that many more forwards ahead; same bubble for uniform stages, every op once', () => {
  assert.deepEqual(plans('1f1b', [true, true, true], 4, 1).map(formatSchedule), ['F0 F1 F2 F3 B0 B1 B2 B3', 'F0 F1 F2 B0 F3 B1 B2 B3', 'F0 B0 F1 B1 F2 B2 F3 B3']);
  for (const slack of [1, 2]) {
    for (let P = 1; P <= 4; P++) {
      for (const M of [1, 2, 4, 8]) {
        const p = plans('1f1b', new Array(P).fill(true), M, slack);
        for (const r of p) for (const op of ['forward', 'backward'] as const) assert.deepEqual(r.filter((a) => a.op === op).map((a) => a.mb), Array.from({ length: M }, (_, i) => i));
        const sim = simulate(p, { forward: new Array(P).fill(1), backward: new Array(P).fill(2) });
        assert.ok(Math.abs(sim.bubble - (P - 1) / (M + P - 1)) < 1e-9, `slack ${slack} P=${P} M=${M}: ${sim.bubble}`);
      }
    }
  }
});

test('1F1B slack absorbs a rank that runs late: the next rank works through its queued activations instead of waiting', () => {
  // Two balanced ranks (rank 0: F 1 + B 2; rank 1: F+B 3, as the last rank runs them fused); rank 0's
  // ops of every other micro-batch run 30 % slow, as when two processes share the cores.
  const jitter = (_op: unknown, r: number, mb: number) => (r === 0 && mb % 2 ? 1.3 : 1);
  const cost = { forward: [1, 0], backward: [2, 3], jitter };
  const strict = simulate(plans('1f1b', [true, true], 8), cost).bubble;
  const slack = simulate(plans('1f1b', [true, true], 8, 1), cost).bubble;
  assert.ok(slack < strict - 0.02, `slack 1: ${slack}, textbook: ${strict}`);
});
