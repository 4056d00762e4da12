// Frames between ranks: chunking round-trips, and a malformed frame is rejected with
// INVALID_ARGUMENT while the worker's peer service keeps serving.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { encodeFrames, FrameAssembler, FrameError, tensorMsg } from '../proto/frames.ts';
import { CHANNEL_OPTIONS, loadProto } from '../proto/load.ts';
import type { FrameMsg } from '../proto/messages.ts';
import { Mailbox } from '../worker/mailbox.ts';
import { expectedFrames } from '../worker/frame-rule.ts';
import { PeerLink, PeerServer } from '../worker/peer.ts';
import { workerPeer } from './support/worker-peer.ts';

const floats = (n: number) => Float32Array.from({ length: n }, (_, i) => i * 0.5 - 3);

test('a chunked activation with labels reassembles exactly', () => {
  const data = floats(2 * 3 * 1000);
  const labels = BigInt64Array.from([1n, 2n, -100n, 4n, 5n, 6n]);
  const frames = encodeFrames({ kind: 'ACTIVATION', step: 7, microBatch: 1, tensor: { dtype: 'float32', shape: [2, 3, 1000], data }, labels: { dtype: 'int64', shape: [2, 3], data: labels }, stepTokens: 9 }, 4096);
  assert.equal(frames.length, Math.ceil((data.byteLength) / 4096));
  const asm = new FrameAssembler();
  const out = frames.map((f) => asm.push(f)).filter(Boolean);
  assert.equal(out.length, 1);
  assert.deepEqual(out[0]!.tensor.data, data);
  assert.deepEqual(out[0]!.labels!.data, labels);
  assert.equal(out[0]!.stepTokens, 9);
});

test('malformed frames are named precisely', () => {
  const good = encodeFrames({ kind: 'GRADIENT', step: 1, microBatch: 0, tensor: { dtype: 'float32', shape: [2, 2], data: floats(4) } })[0];
  const bad = (patch: Partial<FrameMsg>, re: RegExp) => assert.throws(() => new FrameAssembler().push({ ...good, ...patch }), (e: Error) => e instanceof FrameError && re.test(e.message));
  bad({ tensor: { ...good.tensor!, dtype: 'float16' } }, /dtype 'float16'/);
  bad({ tensor: { ...good.tensor!, shape: [2, 3] } }, /shape \[2,3\] × 4 bytes = 24, but 16 bytes arrived/);
  bad({ tensor: { ...good.tensor!, shape: [0, 2] } }, /positive dims/);
  bad({ kind: 'FRAME_KIND_UNSPECIFIED' }, /kind/);
  bad({ chunk: 3, chunks: 2 }, /chunk 3 of 2/);
  assert.throws(() => new FrameAssembler(() => 'step 5 is not expected').push(good), /step 5 is not expected/);
});

test('the peer service answers a bad frame with INVALID_ARGUMENT and keeps delivering good ones', async () => {
  const server = new PeerServer();
  // The worker's own rule, for a rank at step 2 with 2 micro-batches per step.
  server.expect = expectedFrames(0, () => 2, 2, () => 0);
  const address = await server.start('127.0.0.1', 0);
  const { Peer } = loadProto();
  const client = new Peer(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as { Send(f: FrameMsg, cb: (e: grpc.ServiceError | null, r: unknown) => void): void; close(): void };
  const send = (f: FrameMsg) => new Promise<grpc.ServiceError | null>((r) => client.Send(f, (e) => r(e)));
  const frame = (step: number, data = floats(6)): FrameMsg => ({ kind: 'ACTIVATION', step, microBatch: 0, tensor: tensorMsg({ dtype: 'float32', shape: [1, 2, 3], data }), labels: null, inputIds: null, positionIds: null, teacher: null, stepTokens: 0, chunk: 0, chunks: 1, epoch: 0 });
  const wrongSize = { ...frame(2), tensor: { ...frame(2).tensor!, shape: [1, 2, 4] } };
  const e1 = await send(wrongSize);
  assert.equal(e1?.code, grpc.status.INVALID_ARGUMENT);
  assert.match(e1!.details, /16 \* 4|× 4 bytes = 32, but 24 bytes arrived/);
  const e2 = await send(frame(99));
  assert.equal(e2?.code, grpc.status.INVALID_ARGUMENT);
  assert.match(e2!.details, /frame for step 99 while this rank is at step 2/);
  const stale = await send(frame(1));
  assert.equal(stale?.code, grpc.status.INVALID_ARGUMENT, 'a frame of a step already done');
  assert.match(stale!.details, /frame for step 1 while this rank is at step 2/);
  const mb = await send({ ...frame(2), microBatch: 2 });
  assert.equal(mb?.code, grpc.status.INVALID_ARGUMENT);
  assert.match(mb!.details, /micro-batch 2 out of range \(2 per step\)/);
  assert.equal(await send({ ...frame(3), microBatch: 1 }), null, 'the next step and the last micro-batch are accepted');
  assert.equal((await server.mailbox.take('ACTIVATION', 3, 1)).microBatch, 1);
  assert.equal(await send(frame(2)), null);
  const got = await server.mailbox.take('ACTIVATION', 2, 0);
  assert.deepEqual(got.tensor.data, floats(6));
  client.close();

  // The streaming path: activations up, gradients down on the same stream.
  const mailboxBelow = new PeerServer().mailbox;
  const link = new PeerLink(address, mailboxBelow, () => null);
  await link.sendUp({ kind: 'ACTIVATION', step: 3, microBatch: 1, tensor: { dtype: 'float32', shape: [1, 1, 4], data: floats(4) } });
  assert.deepEqual((await server.mailbox.take('ACTIVATION', 3, 1)).tensor.data, floats(4));
  await server.sendDown({ kind: 'GRADIENT', step: 3, microBatch: 1, tensor: { dtype: 'float32', shape: [1, 1, 4], data: floats(4).map((v) => -v) } });
  assert.deepEqual((await mailboxBelow.take('GRADIENT', 3, 1)).tensor.data, floats(4).map((v) => -v));
  link.close();
  await server.stop();
});

test('chunks are copied into a tensor sized from the first one; a chunk of the wrong length is rejected', () => {
  const data = floats(2 * 3 * 1000);
  const frames = encodeFrames({ kind: 'ACTIVATION', step: 2, microBatch: 0, tensor: { dtype: 'float32', shape: [2, 3, 1000], data } }, 4096);
  const asm = new FrameAssembler();
  frames.slice(0, -1).forEach((f) => assert.equal(asm.push(f), null));
  const out = asm.push(frames[frames.length - 1])!;
  assert.equal(out.tensor.data.byteOffset % 4, 0);
  assert.deepEqual(out.tensor.data, data);
  // A middle chunk one byte short, and a first chunk whose shape the announced chunks cannot carry.
  const short = new FrameAssembler();
  short.push(frames[0]);
  assert.throws(() => short.push({ ...frames[1], tensor: { ...frames[1].tensor!, data: frames[1].tensor!.data.subarray(1) } }), /carries 4095 bytes, expected 4096/);
  assert.equal(short.pending(), 0);
  assert.throws(() => new FrameAssembler().push({ ...frames[0], tensor: { ...frames[0].tensor!, shape: [2, 3, 100000] } }), /cannot carry/);
});

test('backpressure waits leave no listeners behind', async () => {
  const server = new PeerServer();
  const address = await server.start('127.0.0.1', 0);
  const link = new PeerLink(address, new Mailbox(), () => null);
  link.chunkBytes = 64 * 1024;
  const stream = (link as unknown as { stream: NodeJS.EventEmitter }).stream;
  const data = new Float32Array(1024 * 1024);
  try {
    for (let step = 0; step < 8; step++) await link.sendUp({ kind: 'ACTIVATION', step, microBatch: 0, tensor: { dtype: 'float32', shape: [1024, 1024], data } });
    for (let step = 0; step < 8; step++) await server.mailbox.take('ACTIVATION', step, 0);
    assert.ok(stream.listenerCount('error') <= 1 && stream.listenerCount('close') === 0 && stream.listenerCount('drain') === 0, `listeners: error ${stream.listenerCount('error')}, close ${stream.listenerCount('close')}, drain ${stream.listenerCount('drain')}`);
  } finally {
    link.close();
    await server.stop();
  }
});

test('PROPIPE_MAX_MESSAGE_MB (default 64) bounds what a worker accepts: larger messages get RESOURCE_EXHAUSTED', async () => {
  const { Peer } = loadProto();
  const frame = (bytes: number): FrameMsg => ({ kind: 'ACTIVATION', step: 0, microBatch: 0, tensor: tensorMsg({ dtype: 'float32', shape: [1, 1, bytes / 4], data: new Float32Array(bytes / 4) }), labels: null, inputIds: null, positionIds: null, teacher: null, stepTokens: 0, chunk: 0, chunks: 1, epoch: 0 });
  const MB = 1024 * 1024;
  for (const [env, under, over] of [[{ PROPIPE_MAX_MESSAGE_MB: '2' }, MB, 3 * MB], [{}, 63 * MB, 65 * MB]] as const) {
    const { address, child } = await workerPeer({ PROPIPE_DATA_PLANE: 'grpc', ...env });
    try {
      // The client itself sends anything, so the limit met is the worker's.
      const client = new Peer(address, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': -1 }) as unknown as { Send(f: FrameMsg, cb: (e: grpc.ServiceError | null, r: unknown) => void): void; close(): void };
      const send = (f: FrameMsg) => new Promise<grpc.ServiceError | null>((r) => client.Send(f, (e) => r(e)));
      const big = await send(frame(over));
      assert.equal(big?.code, grpc.status.RESOURCE_EXHAUSTED, `${over / MB} MB with ${JSON.stringify(env)}: ${big?.details}`);
      // Under the limit the frame reaches the frame checks (this worker has no assignment, so it is accepted).
      const small = await send(frame(under));
      assert.notEqual(small?.code, grpc.status.RESOURCE_EXHAUSTED, `${under / MB} MB with ${JSON.stringify(env)}: ${small?.details}`);
      client.close();
    } finally {
      child.kill('SIGKILL');
    }
  }
});

test('assignments do not mix: a neighbour ahead keeps its frames, stale frames are dropped, gradients go down the stream of their assignment', async () => {
  // Rank 1 of assignment 1; rank 0 already runs assignment 2 (it got its assignment first).
  const server = new PeerServer();
  server.mailbox.reset(1);
  const address = await server.start('127.0.0.1', 0);
  const oldBelow = new Mailbox();
  const newBelow = new Mailbox();
  newBelow.reset(2);
  const oldLink = new PeerLink(address, oldBelow, () => null);
  const newLink = new PeerLink(address, newBelow, () => null);
  const act = (epoch: number, marker: number) => ({ kind: 'ACTIVATION' as const, step: 4, microBatch: 0, tensor: { dtype: 'float32' as const, shape: [1, 1, 1], data: Float32Array.of(marker) }, epoch });
  await oldLink.sendUp(act(1, 1));
  assert.deepEqual([...(await server.mailbox.take('ACTIVATION', 4, 0)).tensor.data], [1]);
  await newLink.sendUp(act(2, 2));
  await oldLink.sendUp(act(1, 3));
  // Rank 1 joins assignment 2: the frame that came early is there, the one of assignment 1 is not.
  await new Promise((r) => setTimeout(r, 200));
  server.mailbox.reset(2);
  assert.deepEqual([...(await server.mailbox.take('ACTIVATION', 4, 0)).tensor.data], [2]);
  await oldLink.sendUp(act(1, 4));
  const nothing = await Promise.race([server.mailbox.take('ACTIVATION', 4, 0).then(() => 'delivered'), new Promise((r) => setTimeout(() => r('nothing'), 300))]);
  assert.equal(nothing, 'nothing', 'a frame of an earlier assignment never reaches the rank');
  // Gradients of assignment 2 go down the stream that carried its activations, not the old one.
  await server.sendDown({ kind: 'GRADIENT', step: 4, microBatch: 0, tensor: { dtype: 'float32', shape: [1, 1, 1], data: Float32Array.of(-2) }, epoch: 2 });
  assert.deepEqual([...(await newBelow.take('GRADIENT', 4, 0)).tensor.data], [-2]);
  // A gradient for an assignment no rank below has reached waits, and ends with the step (the mailbox fails).
  const waiting = server.sendDown({ kind: 'GRADIENT', step: 4, microBatch: 0, tensor: { dtype: 'float32', shape: [1, 1, 1], data: Float32Array.of(-3) }, epoch: 3 });
  server.mailbox.fail(new Error('re-assigning'));
  await assert.rejects(waiting, /re-assigning/);
  oldLink.close();
  newLink.close();
  await server.stop();
});
