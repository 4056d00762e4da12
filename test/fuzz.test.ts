// Fuzzing for a bounded time: random and mutated frames at a worker's peer service and random control
// messages at a coordinator. Nothing crashes or hangs, every call is answered, and both services still
// serve a valid call afterwards.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { startNatsServer } from '../supervisor/nats-server.ts';
import { startCoordinator } from '../coordinator/server.ts';
import { Rng } from '../common/rng.ts';
import { encodeFrames } from '../proto/frames.ts';
import { CHANNEL_OPTIONS, loadProto } from '../proto/load.ts';
import type { FrameMsg } from '../proto/messages.ts';
import { parseRunConfig } from '../recipe/run-config.ts';
import { PeerServer } from '../worker/peer.ts';
import { makeTiny } from './support/tiny.ts';

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

test('random control messages at a coordinator: rejected with a status, the job state unharmed', async () => {
  const tiny = await makeTiny();
  const nats = await startNatsServer();
  const run = parseRunConfig({ model: tiny.model, dataset: tiny.train, output_dir: `${tiny.root}/out`, train_type: 'llamapro', llamapro_new_blocks: 2 });
  const c = await startCoordinator({ run, workers: 2, schedule: '1f1b', microBatches: 1, host: '127.0.0.1', port: 0, natsUrl: nats.url });
  const { Coordinator } = loadProto();
  const client = new Coordinator(c.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  const rng = new Rng(7);
  const num = () => [0, 1, -1, 2 ** 31, rng.nextInt(100), NaN][rng.nextInt(6)];
  const until = Date.now() + SECONDS * 1000;
  let answered = 0;
  while (Date.now() < until) {
    const kind = rng.nextInt(3);
    const e =
      kind === 0
        ? await call(client, 'ReportStep', { workerId: `x${rng.nextInt(3)}`, rank: num(), step: num(), epoch: num(), gradSqSum: num(), lossSum: num(), isEval: rng.nextInt(2) === 1 })
        : kind === 1
          ? await call(client, 'CommitShard', { workerId: 'x', rank: num(), step: num(), file: ['../../etc/passwd', 'shard-00000.safetensors', '', 'a/b'][rng.nextInt(4)], bytes: num(), sha256: 'zz' })
          : await call(client, 'CurrentStage', { epoch: num() });
    answered++;
    if (kind !== 2) assert.ok(e && e.code === grpc.status.FAILED_PRECONDITION, `expected a rejection, got ${e?.code}`);
  }
  assert.ok(answered > 20);
  assert.equal(c.job.phase, 'waiting');
  assert.equal(c.job.state.step, 0);
  assert.equal(await call(client, 'Status', {}), null);
  client.close();
  await c.close();
  await nats.stop();
});
