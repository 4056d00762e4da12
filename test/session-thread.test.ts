// Sessions in the session thread (model/graph/session-host.ts): the same results and errors as on the
// calling thread, an event loop that keeps turning while a graph runs, tensors shared once by
// reference, and no thread left behind when the process ends.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { Graph } from '../model/graph/graph.ts';
import type { HostTensor } from '../model/graph/dtype.ts';
import { shareWithThread, stopSessionThread, unshareWithThread } from '../model/graph/session-host.ts';
import { CompiledGraph } from '../model/graph/session.ts';
import { Rng } from '../common/rng.ts';

const f32 = (shape: number[], data: Float32Array): HostTensor => ({ dtype: 'float32', shape, data });

function randomData(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.nextGaussian());
}

/** y = softmax(x · w) and its row sums: enough ops for the two paths to differ if feeds were mixed up. */
function smallGraph(): Graph {
  const g = new Graph('small');
  const x = g.input('x', 'float32', ['rows', 16]);
  const w = g.input('w', 'float32', [16, 8]);
  const y = g.op('Softmax', [g.op('MatMul', [x, w])], { axis: -1 });
  g.output(g.rename(y, 'y'));
  g.output(g.rename(g.op('ReduceSum', [y, g.constant([1], 'int64', [1])], { keepdims: 0 }), 'sums'));
  return g;
}

/** `reps` chained 256×256 MatMuls: a run long enough to watch the event loop during it. */
function slowGraph(reps: number): Graph {
  const g = new Graph('slow');
  let v = g.input('x', 'float32', [256, 256]);
  const w = g.input('w', 'float32', [256, 256]);
  for (let i = 0; i < reps; i++) v = g.op('Tanh', [g.op('MatMul', [v, w])]);
  g.output(g.rename(v, 'y'));
  return g;
}

test('a session in the thread returns exactly what the same session returns on the calling thread', async () => {
  const feeds = { x: f32([5, 16], randomData(80, 1)), w: f32([16, 8], randomData(128, 2)) };
  const inThread = await CompiledGraph.create(smallGraph(), { thread: false });
  const threaded = await CompiledGraph.create(smallGraph(), { thread: true });
  const a = await inThread.run(feeds);
  const b = await threaded.run(feeds);
  assert.deepEqual(b, a);
  assert.equal(feeds.x.data.length, 80, 'the caller keeps its feeds');
  await inThread.release();
  await threaded.release();
});

test('an error in the thread surfaces with the message the calling thread would give', async () => {
  const bad = { x: f32([5, 15], randomData(75, 1)), w: f32([16, 8], randomData(128, 2)) };
  const messages: string[] = [];
  for (const thread of [false, true]) {
    const c = await CompiledGraph.create(smallGraph(), { thread });
    const err = await c.run(bad).then(() => null, (e: Error) => e);
    assert.ok(err instanceof Error, `thread=${thread}: a wrong shape is refused`);
    messages.push(err.message);
    await assert.rejects(c.run({ x: bad.x }), /graph input 'w' was not fed/);
    await c.release();
  }
  assert.match(messages[1], /x/);
  assert.equal(messages[1], messages[0]);
  const released = await CompiledGraph.create(smallGraph(), { thread: true });
  await released.release();
  await assert.rejects(released.run({ x: f32([1, 16], randomData(16, 3)), w: f32([16, 8], randomData(128, 2)) }), /was released/);
});

test('the event loop keeps turning while a thread session runs, and stops while an in-thread one does', async () => {
  const feeds = { x: f32([256, 256], randomData(65536, 4)), w: f32([256, 256], randomData(65536, 5).map((v) => v / 16)) };
  const gaps: Record<string, { longest: number; run: number }> = {};
  for (const thread of [false, true]) {
    // Long enough (0.3–1 s) that a loaded machine's scheduling jitter (tens of ms) stays well below half a run.
    const c = await CompiledGraph.create(slowGraph(240), { thread, threads: 1 });
    await c.run(feeds);
    let last = performance.now();
    let longest = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
    }, 5);
    const t0 = performance.now();
    await c.run(feeds);
    const run = performance.now() - t0;
    clearInterval(timer);
    longest = Math.max(longest, performance.now() - last);
    gaps[thread ? 'thread' : 'inThread'] = { longest, run };
    await c.release();
  }
  assert.ok(gaps.inThread.longest > 0.8 * gaps.inThread.run, `in-thread run blocks the loop: ${JSON.stringify(gaps)}`);
  assert.ok(gaps.thread.longest < 0.5 * gaps.thread.run, `thread run leaves the loop free: ${JSON.stringify(gaps)}`);
});

test('graphs sharing a large initializer both compile in the thread, and the caller keeps its values', async () => {
  const w = randomData(64 * 1024, 8);
  const build = (name: string) => {
    const g = new Graph(name);
    const x = g.input('x', 'float32', [2, 256]);
    g.output(g.rename(g.op('MatMul', [x, g.initializer('w', 'float32', [256, 256], w)]), 'y'));
    return g;
  };
  const x = f32([2, 256], randomData(512, 9));
  const ref = await (await CompiledGraph.create(build('a'), { thread: false })).run({ x });
  const first = await CompiledGraph.create(build('b'), { thread: true });
  const second = await CompiledGraph.create(build('c'), { thread: true });
  assert.equal(w.length, 64 * 1024, 'the initializer is still readable after two sessions were built from it');
  assert.deepEqual(await first.run({ x }), ref);
  assert.deepEqual(await second.run({ x }), ref);
  await first.release();
  await second.release();
});

test('a shared tensor crosses once and is fed by reference until it is unshared', async () => {
  const w = shareWithThread(f32([16, 8], randomData(128, 2)));
  assert.equal(w.data.length, 0, 'its buffer moved to the thread');
  const x = f32([3, 16], randomData(48, 6));
  const c = await CompiledGraph.create(smallGraph(), { thread: true });
  const ref = await (await CompiledGraph.create(smallGraph(), { thread: false })).run({ x, w: f32([16, 8], randomData(128, 2)) });
  assert.deepEqual(await c.run({ x, w }), ref);
  const plain = await CompiledGraph.create(smallGraph(), { thread: false });
  await assert.rejects(plain.run({ x, w }), /graph input 'w' was moved to the session thread/);
  unshareWithThread(w.data);
  await assert.rejects(c.run({ x, w }), /graph input 'w' has no values/);
  await c.release();
});

test('a run in flight when the thread stops fails with a message, and a new session starts a new thread', async () => {
  const feeds = { x: f32([256, 256], randomData(65536, 4)), w: f32([256, 256], randomData(65536, 5).map((v) => v / 16)) };
  const c = await CompiledGraph.create(slowGraph(60), { thread: true, threads: 1 });
  const running = c.run(feeds);
  await stopSessionThread();
  await assert.rejects(running, /the ONNX Runtime session thread stopped: .*create them again/);
  const again = await CompiledGraph.create(smallGraph(), { thread: true });
  const out = await again.run({ x: f32([2, 16], randomData(32, 7)), w: f32([16, 8], randomData(128, 2)) });
  assert.deepEqual(out.y.shape, [2, 8]);
  await again.release();
});

test('a process whose sessions ran in the thread exits on its own', async () => {
  const child = path.resolve(import.meta.dirname, 'support/session-thread-exit.ts');
  const t0 = performance.now();
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', child], { timeout: 30_000 });
  assert.equal(stdout.trim(), '-1,-2');
  assert.ok(performance.now() - t0 < 30_000);
});
