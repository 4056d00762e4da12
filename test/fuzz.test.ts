// Fuzzing: random and mutated frames at a worker's peer service for a bounded time (nothing crashes or
// hangs, every call is answered, the service still serves a valid call), and control messages that
// each break one rule at a coordinator running a real job (each refused by its own check; the job
// still ends with the uninterrupted run's weights).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { startNatsServer } from '../supervisor/nats-server.ts';
import type { Job } from '../coordinator/job.ts';
import { startCoordinator } from '../coordinator/server.ts';
import { openCheckpoint } from '../model/hf/checkpoint.ts';
import { Rng } from '../common/rng.ts';
import { encodeFrames } from '../proto/frames.ts';
import { CHANNEL_OPTIONS, loadProto } from '../proto/load.ts';
import type { FrameMsg } from '../proto/messages.ts';
import { parseRunConfig } from '../recipe/run-config.ts';
import { PeerServer } from '../worker/peer.ts';
import { Trainer } from '../local/trainer.ts';
import { maxRelError } from './support/compare.ts';
import { readMetrics, stepRecords } from './support/continuation.ts';
import { makeTiny } from './support/tiny.ts';

const BIN = path.resolve(import.meta.dirname, '../bin/propipe.mjs');

const SECONDS = 3;
type Unary = (req: unknown, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: unknown) => void) => void;

function call(client: grpc.Client, method: string, req: unknown): Promise<grpc.ServiceError | null> {
  return new Promise((resolve) => ((client as unknown as Record<string, Unary>)[method]).call(client, req, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e) => resolve(e)));
}

function mutate(rng: Rng, f: FrameMsg): FrameMsg {
  const m: FrameMsg = { ...f, tensor: f.tensor ? { ...f.tensor, shape: [...f.tensor.shape] } : null };
  switch (rng.nextInt(9)) {
    case 0: return { ...m, kind: (['ACTIVATION', 'GRADIENT', 'EVAL_ACTIVATION', 'FRAME_KIND_UNSPECIFIED'] as const)[rng.nextInt(4)] };
    case 1: return { ...m, step: rng.nextInt(1000) };
    case 2: return { ...m, microBatch: rng.nextInt(100) };
    case 3: return { ...m, tensor: m.tensor && { ...m.tensor, dtype: ['float32', 'int64', 'float16', '', 'bogus'][rng.nextInt(5)] } };
    case 4: return { ...m, tensor: m.tensor && { ...m.tensor, shape: Array.from({ length: rng.nextInt(6) }, () => rng.nextInt(5)) } };
    case 5: return { ...m, tensor: m.tensor && { ...m.tensor, data: m.tensor.data.subarray(0, rng.nextInt(m.tensor.data.length + 1)) } };
    case 6: return { ...m, chunk: rng.nextInt(5), chunks: rng.nextInt(5) };
    case 7: return { ...m, tensor: null };
    default: return { ...m, labels: { dtype: 'int64', shape: [rng.nextInt(4) + 1], data: Buffer.alloc(rng.nextInt(40)) } };
  }
}

test('random and mutated frames at a worker: every one answered, the service keeps working', async () => {
  const server = new PeerServer();
  const address = await server.start('127.0.0.1', 0);
  const { Peer } = loadProto();
  const client = new Peer(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  const rng = new Rng(42);
  const valid = encodeFrames({ kind: 'ACTIVATION', step: 1, microBatch: 0, tensor: { dtype: 'float32', shape: [1, 2, 3], data: new Float32Array(6) } })[0];
  let answered = 0;
  let rejected = 0;
  const until = Date.now() + SECONDS * 1000;
  while (Date.now() < until) {
    const e = await call(client, 'Send', mutate(rng, valid));
    answered++;
    if (e) {
      assert.ok(e.code === grpc.status.INVALID_ARGUMENT, `unexpected ${e.code}: ${e.details}`);
      rejected++;
    }
  }
  // Garbage on the stream: the stream is closed with an error, the server survives.
  const stream = (client as unknown as { Exchange(): grpc.ClientDuplexStream<FrameMsg, FrameMsg> }).Exchange();
  const closed = new Promise<void>((r) => stream.on('error', () => r()).on('end', () => r()));
  for (let i = 0; i < 50; i++) stream.write(mutate(rng, valid));
  stream.end();
  await closed;
  assert.equal(await call(client, 'Send', { ...valid, step: 2 }), null, 'a valid frame still gets through');
  assert.ok(answered > 20 && rejected > 0, `${answered} answered, ${rejected} rejected`);
  client.close();
  await server.stop();
});

/** Coordinator calls that must all be refused, each with the reasons that may refuse it. */
type Probe = { method: string; req: Record<string, unknown>; why: RegExp; kind: string };

/**
 * A message that breaks exactly one rule the coordinator enforces (or a read-only query), built from
 * the job's live state, so each check is the one that must answer: removing any check lets its
 * messages through or changes the reason. Steps are wrong by at least 2, so the job moving on while the
 * message travels cannot make one right.
 */
function probe(rng: Rng, job: Job): Probe {
  const pick = <T>(xs: readonly T[]) => xs[rng.nextInt(xs.length)];
  const ids = ['w0', 'w1'];
  // No NaN or negative steps and ranks: protobuf may send them as 0, which may be right.
  const wrongStep = () => pick([job.state.step + 2 + rng.nextInt(50), job.state.step >= 3 ? job.state.step - 3 : job.state.step + 3, 2 ** 31]);
  const own = (w: string) => job.rankOf(w);
  const foreign = (w: string) => pick([own(w) === 0 ? 1 : 0, 2, 7, 2 ** 31]);
  const worker = pick([...ids, 'x', '']);
  const isEval = rng.nextInt(3) === 0;
  const rightStep = isEval ? job.state.step - 1 : job.state.step;
  const values = { gradSqSum: pick([0, 1, NaN, -1]), lossSum: pick([0, 1e30, NaN]), tokens: rng.nextInt(100), isEval };
  switch (rng.nextInt(7)) {
    case 0:
      return { kind: 'report: wrong epoch', method: 'ReportStep', why: /assignment epoch/, req: { workerId: worker, rank: pick([0, 1]), step: pick([rightStep, wrongStep()]), epoch: pick([job.epoch + 1, job.epoch - 1, 0, 99, NaN]), ...values } };
    case 1: {
      const w = pick(ids);
      return { kind: 'report: wrong step', method: 'ReportStep', why: /the job expects step/, req: { workerId: w, rank: own(w), step: wrongStep(), epoch: job.epoch, ...values } };
    }
    case 2: {
      // The right step as seen now; should the barrier move on first, the step check answers instead.
      const w = pick([...ids, 'x', '']);
      return { kind: 'report: wrong rank', method: 'ReportStep', why: /is not rank \S+ of the current assignment|the job expects step/, req: { workerId: w, rank: ids.includes(w) ? foreign(w) : pick([0, 1]), step: rightStep, epoch: job.epoch, ...values } };
    }
    case 3: {
      const w = pick(ids);
      return { kind: 'shard: bad name', method: 'CommitShard', why: /shard file name/, req: { workerId: w, rank: own(w), step: job.state.step, file: pick(['../../etc/passwd', '', 'a/b', 'shard-1.safetensors', 'shard-00000.safetensors/../../x', '/tmp/shard-00000.safetensors']), bytes: 1, sha256: 'zz' } };
    }
    case 4: {
      const w = pick([...ids, 'x']);
      return { kind: 'shard: wrong rank', method: 'CommitShard', why: /is not rank/, req: { workerId: w, rank: ids.includes(w) ? foreign(w) : 0, step: job.state.step, file: 'shard-00000.safetensors', bytes: 1, sha256: 'zz' } };
    }
    case 5: {
      const w = pick(ids);
      return { kind: 'shard: no commit pending', method: 'CommitShard', why: /no checkpoint of step/, req: { workerId: w, rank: own(w), step: wrongStep(), file: `shard-0000${own(w)}.safetensors`, bytes: 1, sha256: 'zz' } };
    }
    default:
      return { kind: 'stage query', method: 'CurrentStage', why: /^$/, req: { epoch: pick([0, 1, NaN, 2 ** 31]) } };
  }
}

test('random control messages at a coordinator running a real job: each refused by its own check, the job ends with the right weights', async (t) => {
  const tiny = await makeTiny();
  const cfg = { model: tiny.model, dataset: tiny.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, steps_per_stage: 4, save_steps: 2, learning_rate: 1e-2, per_device_train_batch_size: 4, seed: 5 };
  const reference = await new Trainer({ ...cfg, output_dir: path.join(tiny.root, 'reference') }).train();
  const out = path.join(tiny.root, 'fuzzed');
  const nats = await startNatsServer();
  const c = await startCoordinator({ run: parseRunConfig({ ...cfg, output_dir: out }), workers: 2, schedule: '1f1b', microBatches: 1, host: '127.0.0.1', port: 0, natsUrl: nats.url, staticPartition: true });
  const workers = [0, 1].map((i) => spawn(process.execPath, [BIN, 'worker', '--coordinator', c.address, '--worker-id', `w${i}`], { stdio: 'ignore', env: { ...process.env, PROPIPE_LOG_LEVEL: 'warn' } }));
  const exited = workers.map((w) => new Promise<number | null>((r) => w.once('exit', (code) => r(code))));
  let finished = false;
  void c.done.then(() => (finished = true));
  const { Coordinator } = loadProto();
  const client = new Coordinator(c.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  const rng = new Rng(7);
  const seen = new Map<string, number>();
  try {
    const until = Date.now() + 180_000;
    while (c.job.phase !== 'running' && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    while (!finished && Date.now() < until) {
      if (c.job.phase !== 'running') {
        await new Promise((r) => setTimeout(r, 5));
        continue;
      }
      const p = probe(rng, c.job);
      const e = await call(client, p.method, p.req);
      // The job left 'running' while the probe travelled (its last step done, or a stage boundary): the
      // phase check answers before the one probed. Not a refusal for the wrong reason; not counted.
      if (c.job.phase !== 'running' && e?.details === 'the job is re-assigning: register again') continue;
      seen.set(p.kind, (seen.get(p.kind) ?? 0) + 1);
      if (p.method === 'CurrentStage') assert.equal(e, null);
      else {
        assert.ok(e, `${p.kind} was accepted: ${JSON.stringify(p.req)}`);
        // Transient (ABORTED): a real worker that sent it would register again, not stop.
        assert.equal(e.code, grpc.status.ABORTED, `${p.kind}: ${e.code} ${e.details}`);
        assert.match(e.details, p.why, `${p.kind} refused for another reason: ${JSON.stringify(p.req)}`);
      }
    }
    assert.ok(finished, 'the job finished');
    assert.deepEqual(await Promise.all(exited), [0, 0], 'both workers ended normally');
  } finally {
    client.close();
    workers.forEach((w) => w.exitCode === null && w.kill('SIGKILL'));
    await c.close();
    await nats.stop();
  }
  for (const kind of ['report: wrong epoch', 'report: wrong step', 'report: wrong rank', 'shard: bad name', 'shard: wrong rank', 'shard: no commit pending']) assert.ok((seen.get(kind) ?? 0) >= 3, `${kind}: ${seen.get(kind) ?? 0} sent`);
  t.diagnostic(`probes sent during the run: ${JSON.stringify(Object.fromEntries(seen))}`);
  const steps = stepRecords(readMetrics(out));
  assert.deepEqual(steps.map((r) => r.step), [1, 2, 3, 4, 5, 6, 7, 8], 'every step once, none failed over');
  assert.ok(!readMetrics(out).some((r) => r.event === 'recover'));
  const ref = openCheckpoint(reference.finalDir);
  const got = openCheckpoint(path.join(out, 'final'));
  for (const n of ref.names()) assert.ok(maxRelError(got.readF32(n), ref.readF32(n)) <= 1e-5, n);
});
