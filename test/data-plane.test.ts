// The socket data plane (worker/data-plane.ts, proto/data-wire.ts): frames of every kind cross intact
// both ways over mutual TLS; a connection without the job's token or certificate delivers nothing;
// a bad header is refused with a reason before anything is allocated; frames of an earlier assignment
// are dropped; a neighbour that dies fails the step instead of hanging it.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { record, RECORD, frameRecord } from '../proto/data-wire.ts';
import type { OutFrame } from '../proto/frames.ts';
import { loadProto } from '../proto/load.ts';
import type { FrameMsg } from '../proto/messages.ts';
import { loadSecurity, type Security } from '../proto/security.ts';
import { makeLocalCredentials } from '../supervisor/credentials.ts';
import { DataPlaneLink, DataPlaneServer } from '../worker/data-plane.ts';
import { Mailbox } from '../worker/mailbox.ts';
import { advertised, dataPlaneOf } from '../worker/transport.ts';
import { spy } from './support/mailbox-spy.ts';
import { workerPeer } from './support/worker-peer.ts';

const tmpCreds = () => makeLocalCredentials(fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-dp-')));
const floats = (n: number, seed = 1) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * seed));
const act = (step: number, marker: number, epoch = 0): OutFrame => ({ kind: 'ACTIVATION', step, microBatch: 0, tensor: { dtype: 'float32', shape: [1, 1, 1], data: Float32Array.of(marker) }, epoch });
const within = <T>(p: Promise<T>, ms: number, what: string) => Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms).unref())]);

test('frames of every kind cross the data plane intact both ways, over mutual TLS with the token', async (t) => {
  const c = tmpCreds();
  const sec = loadSecurity({ tlsCert: c.tlsCert, tlsKey: c.tlsKey, tlsCa: c.tlsCa, mutual: true, tokenFile: c.tokenFile });
  const server = new DataPlaneServer(sec);
  const address = await server.start('127.0.0.1', 0);
  t.after(() => server.stop());
  assert.match(address, /^socket:\/\/127\.0\.0\.1:\d+$/);
  const below = new Mailbox();
  const link = new DataPlaneLink(address, below, () => null, sec, 'w0');
  // 3 MB of activations (many TLS records and socket chunks), bf16 teacher bits, int64 labels and positions.
  const big = floats(768 * 1024);
  const labels = BigInt64Array.from({ length: 8 }, (_, i) => BigInt(i * 3 - 100));
  const teacher = Uint16Array.from({ length: 6 }, (_, i) => 0x3f80 + i);
  const bits = Uint16Array.from({ length: 6 }, (_, i) => 0x4000 + i);
  await link.sendUp({ kind: 'ACTIVATION', step: 5, microBatch: 1, tensor: { dtype: 'float32', shape: [2, 3, 131072], data: big }, labels: { dtype: 'int64', shape: [1, 8], data: labels }, positionIds: { dtype: 'int64', shape: [1, 8], data: labels }, stepTokens: 77, epoch: 0 });
  await link.sendUp({ kind: 'EVAL_ACTIVATION', step: 5, microBatch: 9, tensor: { dtype: 'bfloat16', shape: [1, 2, 3], data: bits }, teacher: { dtype: 'bfloat16', shape: [1, 2, 3], data: teacher } });
  await link.sendUp({ kind: 'EMBED_GRAD', step: 5, microBatch: 0, tensor: { dtype: 'float32', shape: [4, 2], data: floats(8, 3) } });
  const a = await within(server.mailbox.take('ACTIVATION', 5, 1), 10_000, 'activation');
  assert.deepEqual(a.tensor.shape, [2, 3, 131072]);
  assert.ok(Buffer.from(a.tensor.data.buffer, a.tensor.data.byteOffset, a.tensor.data.byteLength).equals(Buffer.from(big.buffer)), 'activation bytes equal');
  assert.deepEqual([...(a.labels!.data as BigInt64Array)], [...labels]);
  assert.deepEqual([...(a.positionIds!.data as BigInt64Array)], [...labels]);
  assert.equal(a.stepTokens, 77);
  assert.equal(a.teacher, null);
  const e = await server.mailbox.take('EVAL_ACTIVATION', 5, 9);
  assert.equal(e.tensor.dtype, 'bfloat16');
  assert.deepEqual([...e.tensor.data], [...bits]);
  assert.deepEqual([...e.teacher!.data], [...teacher], 'the teacher hidden state rides with the activation');
  assert.deepEqual([...(await server.mailbox.take('EMBED_GRAD', 5, 0)).tensor.data], [...floats(8, 3)]);
  // Gradients go down the same connection.
  await server.sendDown({ kind: 'GRADIENT', step: 5, microBatch: 1, tensor: { dtype: 'float32', shape: [2, 3, 131072], data: big.map((v) => -v) } });
  const g = await within(below.take('GRADIENT', 5, 1), 10_000, 'gradient');
  assert.equal(g.tensor.data[1], -big[1]);
  assert.equal(g.tensor.data[big.length - 1], -big[big.length - 1]);
  link.close();
  await server.stop();
  fs.rmSync(c.dir, { recursive: true, force: true });
});

test('data plane access: without the token or a job certificate nothing is delivered, and the link fails with the reason', async (t) => {
  const c = tmpCreds();
  const other = tmpCreds();
  const sec = loadSecurity({ tlsCert: c.tlsCert, tlsKey: c.tlsKey, tlsCa: c.tlsCa, mutual: true, tokenFile: c.tokenFile });
  const server = new DataPlaneServer(sec);
  const address = await server.start('127.0.0.1', 0);
  t.after(() => server.stop());
  const delivered = spy(server.mailbox);
  const attempt = async (s: Security, marker: number) => {
    const mailbox = new Mailbox();
    const link = new DataPlaneLink(address, mailbox, () => null, s);
    const sent = await within(link.sendUp(act(1, marker)).then(() => 'sent', (e: Error) => e.message), 10_000, `attempt ${marker}`);
    link.close();
    return sent;
  };
  assert.match(await attempt({ ...sec, token: 'not-the-token' }, 101), /refused by the rank above: wrong bearer token/);
  assert.match(await attempt({ tls: sec.tls }, 102), /missing bearer token/);
  // No client certificate, a certificate of another CA: the TLS handshake fails, no record is read.
  assert.match(await attempt({ ...sec, tls: { ...sec.tls!, mutual: false } }, 103), /link to .* failed/);
  const foreign = loadSecurity({ tlsCert: other.tlsCert, tlsKey: other.tlsKey, tlsCa: c.tlsCa, mutual: true, tokenFile: c.tokenFile });
  assert.match(await attempt(foreign, 104), /link to .* failed/);
  // A plaintext client speaks to a TLS port: nothing it writes is taken as a record.
  const plain = net.connect(Number(address.split(':').pop()), '127.0.0.1');
  plain.on('error', () => undefined);
  plain.write(record(RECORD.HELLO, JSON.stringify({ authorization: `Bearer ${sec.token}` })));
  plain.write(frameRecord(act(1, 105))[0]);
  await once(plain, 'close');
  assert.equal(delivered.length, 0, 'no refused connection delivered a frame');
  assert.equal(await attempt(sec, 1), 'sent');
  assert.deepEqual([...(await within(server.mailbox.take('ACTIVATION', 1, 0), 5000, 'good frame')).tensor.data], [1]);
  assert.deepEqual(delivered.map((f) => f.tensor.data[0]), [1], 'exactly the authorised frame was delivered');
  await server.stop();
  fs.rmSync(c.dir, { recursive: true, force: true });
  fs.rmSync(other.dir, { recursive: true, force: true });
});

/** Speaks the wire by hand (plain TCP, the right token): returns what the server answered to `records`. */
async function rawExchange(address: string, token: string, records: Buffer[]): Promise<string> {
  const sock = net.connect(Number(address.split(':').pop()), '127.0.0.1');
  sock.on('error', () => undefined);
  sock.write(record(RECORD.HELLO, JSON.stringify({ authorization: `Bearer ${token}`, from: 'raw' })));
  for (const r of records) sock.write(r);
  const got: Buffer[] = [];
  sock.on('data', (d: Buffer) => got.push(d));
  await within(once(sock, 'close'), 10_000, 'refusal');
  const all = Buffer.concat(got);
  // WELCOME (5 bytes), then REFUSED with its reason.
  assert.equal(all[0], RECORD.WELCOME);
  assert.equal(all[5], RECORD.REFUSED, 'the server refused the stream');
  return all.subarray(10).toString('utf8');
}

const header = (m: Partial<FrameMsg>) => {
  const codec = loadProto().Peer.service.Exchange;
  const base: FrameMsg = { kind: 'ACTIVATION', step: 1, microBatch: 0, tensor: { dtype: 'float32', shape: [2, 2], data: Buffer.alloc(0) }, labels: null, inputIds: null, positionIds: null, teacher: null, stepTokens: 0, chunk: 0, chunks: 1, epoch: 0 };
  return record(RECORD.FRAME, codec.requestSerialize({ ...base, ...m }));
};

test('a bad frame header is refused with a reason naming the problem, before anything is allocated or delivered', async (t) => {
  const token = 'tok';
  const server = new DataPlaneServer({ token }, { maxHeaderBytes: 4096, maxTensorBytes: 1024 * 1024 });
  server.expect = (_k, step) => (step > 3 ? `frame for step ${step} while this rank is at step 1` : null);
  const address = await server.start('127.0.0.1', 0);
  t.after(() => server.stop());
  const delivered = spy(server.mailbox);
  const tm = (dtype: string, shape: number[]) => ({ dtype, shape, data: Buffer.alloc(0) });
  assert.match(await rawExchange(address, token, [header({ tensor: tm('float32', [1024, 1024]) })]), /ACTIVATION:1:0@0 tensor: shape \[1024,1024\] float32 is 4194304 bytes, above the data plane's limit of 1048576 bytes \(PROPIPE_MAX_TENSOR_MB\)/);
  assert.match(await rawExchange(address, token, [header({ tensor: tm('float16', [2, 2]) })]), /dtype 'float16' is not float32, bfloat16 or int64/);
  assert.match(await rawExchange(address, token, [header({ tensor: tm('float32', [2, 0]) })]), /shape \[2,0\] is not 1 to 4 positive dims/);
  assert.match(await rawExchange(address, token, [header({ kind: 'BOGUS' as FrameMsg['kind'] })]), /frame kind/);
  assert.match(await rawExchange(address, token, [header({ step: 9 })]), /frame for step 9 while this rank is at step 1/);
  assert.match(await rawExchange(address, token, [header({ teacher: tm('float32', [4]) })]), /the teacher's hidden state .* must match the tensor/);
  assert.match(await rawExchange(address, token, [header({ chunks: 2 })]), /data plane frames are whole/);
  assert.match(await rawExchange(address, token, [record(RECORD.FRAME, Buffer.alloc(5000))]), /record of 5000 bytes is above PROPIPE_MAX_MESSAGE_MB/);
  assert.match(await rawExchange(address, token, [record(RECORD.FRAME, Buffer.from([0xff, 0xff, 0xff]))]), /not a Frame message/);
  assert.match(await rawExchange(address, token, [Buffer.from([9, 0, 0, 0, 0])]), /record type 9/);
  // An unauthenticated peer cannot make the server buffer a large record.
  const bigHello = net.connect(Number(address.split(':').pop()), '127.0.0.1');
  bigHello.on('error', () => undefined);
  bigHello.write(record(RECORD.HELLO, Buffer.alloc(100_000)));
  const refusal: Buffer[] = [];
  bigHello.on('data', (d: Buffer) => refusal.push(d));
  await within(once(bigHello, 'close'), 5000, 'large hello');
  assert.match(Buffer.concat(refusal).subarray(5).toString(), /a record of 100000 bytes before the hello was accepted/);
  // A frame before the hello is refused too.
  const early = net.connect(Number(address.split(':').pop()), '127.0.0.1');
  early.write(Buffer.concat(frameRecord(act(1, 7))));
  const answer: Buffer[] = [];
  early.on('data', (d: Buffer) => answer.push(d));
  await within(once(early, 'close'), 5000, 'early frame');
  assert.match(Buffer.concat(answer).subarray(5).toString(), /a frame arrived before the hello was accepted/);
  assert.equal(delivered.length, 0);
  // The same server still takes a good frame (header + 16 raw bytes).
  const good = new DataPlaneLink(address, new Mailbox(), () => null, { token });
  await good.sendUp({ kind: 'ACTIVATION', step: 1, microBatch: 0, tensor: { dtype: 'float32', shape: [2, 2], data: Float32Array.of(1, 2, 3, 4) } });
  assert.deepEqual([...(await within(server.mailbox.take('ACTIVATION', 1, 0), 5000, 'good')).tensor.data], [1, 2, 3, 4]);
  good.close();
  await server.stop();
});

test('data plane assignments do not mix: stale frames are dropped, gradients go down the connection of their assignment, a refused frame from above is skipped', async (t) => {
  const server = new DataPlaneServer();
  server.mailbox.reset(1);
  const address = await server.start('127.0.0.1', 0);
  t.after(() => server.stop());
  const oldBelow = new Mailbox();
  const newBelow = new Mailbox();
  newBelow.reset(2);
  // The new link refuses gradients of step 99 (its rule), and keeps reading after them.
  const oldLink = new DataPlaneLink(address, oldBelow, () => null);
  const newLink = new DataPlaneLink(address, newBelow, (_k, step) => (step === 99 ? 'not this step' : null));
  await oldLink.sendUp(act(4, 1, 1));
  assert.deepEqual([...(await server.mailbox.take('ACTIVATION', 4, 0)).tensor.data], [1]);
  await newLink.sendUp(act(4, 2, 2));
  await oldLink.sendUp(act(4, 3, 1));
  await new Promise((r) => setTimeout(r, 200));
  server.mailbox.reset(2);
  assert.deepEqual([...(await server.mailbox.take('ACTIVATION', 4, 0)).tensor.data], [2]);
  await oldLink.sendUp(act(4, 4, 1));
  const nothing = await Promise.race([server.mailbox.take('ACTIVATION', 4, 0).then(() => 'delivered'), new Promise((r) => setTimeout(() => r('nothing'), 300))]);
  assert.equal(nothing, 'nothing', 'a frame of an earlier assignment never reaches the rank');
  const grad = (step: number, v: number) => ({ kind: 'GRADIENT' as const, step, microBatch: 0, tensor: { dtype: 'float32' as const, shape: [1, 1, 1], data: Float32Array.of(v) }, epoch: 2 });
  await server.sendDown(grad(99, -9));
  await server.sendDown(grad(4, -2));
  assert.deepEqual([...(await within(newBelow.take('GRADIENT', 4, 0), 5000, 'gradient')).tensor.data], [-2]);
  const waiting = server.sendDown({ ...grad(4, -3), epoch: 3 });
  server.mailbox.fail(new Error('re-assigning'));
  await assert.rejects(waiting, /re-assigning/);
  oldLink.close();
  newLink.close();
  await server.stop();
});

test('a neighbour that dies fails the step on both sides instead of hanging it', async (t) => {
  const server = new DataPlaneServer();
  const address = await server.start('127.0.0.1', 0);
  t.after(() => server.stop());
  const below = new Mailbox();
  const link = new DataPlaneLink(address, below, () => null);
  await link.sendUp(act(1, 1));
  await server.mailbox.take('ACTIVATION', 1, 0);
  const pending = below.take('GRADIENT', 1, 0);
  await server.stop();
  await assert.rejects(within(pending, 5000, 'link failure'), /link to socket:\/\/127\.0\.0\.1:\d+ failed/);
  await assert.rejects(link.sendUp(act(2, 2)), /failed/);
  // Nothing listens any more: a new link fails at once too.
  const again = new Mailbox();
  const late = new DataPlaneLink(address, again, () => null);
  await assert.rejects(within(late.sendUp(act(3, 3)), 5000, 'refused connect'), /ECONNREFUSED/);
});

test('data plane names: --data-plane values and advertised addresses', () => {
  assert.equal(dataPlaneOf(undefined), 'socket');
  assert.equal(dataPlaneOf('grpc'), 'grpc');
  assert.throws(() => dataPlaneOf('udp'), /--data-plane must be socket or grpc, got 'udp'/);
  assert.equal(advertised('socket://0.0.0.0:7001', 'w1.svc'), 'socket://w1.svc:7001');
  assert.equal(advertised('0.0.0.0:7001', 'w1.svc'), 'w1.svc:7001');
  assert.throws(() => new DataPlaneLink('socket://nohost', new Mailbox(), () => null), /is not socket:\/\/host:port/);
});

test('random and mutated bytes after a good hello: every stream is refused or skipped, the server keeps serving', async (t) => {
  const token = 'tok';
  const server = new DataPlaneServer({ token }, { maxHeaderBytes: 1 << 16, maxTensorBytes: 1 << 20 });
  const address = await server.start('127.0.0.1', 0);
  t.after(() => server.stop());
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const good = Buffer.concat(frameRecord({ kind: 'ACTIVATION', step: 1, microBatch: 0, tensor: { dtype: 'float32', shape: [4], data: Float32Array.of(1, 2, 3, 4) } }));
  const until = Date.now() + 1500;
  let streams = 0;
  while (Date.now() < until) {
    // Half random bytes, half a valid frame with a few bytes flipped (header or payload).
    const bytes = rand() < 0.5 ? Buffer.from(Array.from({ length: 1 + Math.floor(rand() * 64) }, () => Math.floor(rand() * 256))) : Buffer.from(good);
    if (bytes.length === good.length) for (let k = 0; k < 3; k++) bytes[Math.floor(rand() * bytes.length)] ^= 1 + Math.floor(rand() * 255);
    const sock = net.connect(Number(address.split(':').pop()), '127.0.0.1');
    sock.on('error', () => undefined);
    sock.write(record(RECORD.HELLO, JSON.stringify({ authorization: `Bearer ${token}` })));
    sock.write(bytes);
    sock.on('data', () => undefined);
    // Refused (the server closes), or accepted / waiting for bytes that never come (we close).
    await Promise.race([once(sock, 'close'), new Promise((r) => setTimeout(r, 30))]);
    sock.destroy();
    streams++;
  }
  t.diagnostic(`${streams} mutated streams`);
  assert.ok(streams > 10);
  const mailbox = server.mailbox;
  const link = new DataPlaneLink(address, new Mailbox(), () => null, { token });
  await link.sendUp({ kind: 'ACTIVATION', step: 2, microBatch: 0, tensor: { dtype: 'float32', shape: [2], data: Float32Array.of(5, 6) } });
  assert.deepEqual([...(await within(mailbox.take('ACTIVATION', 2, 0), 5000, 'valid frame after the fuzz')).tensor.data], [5, 6]);
  link.close();
});

test('a real worker serves the socket plane by default, with its limits from PROPIPE_MAX_MESSAGE_MB and PROPIPE_MAX_TENSOR_MB', async () => {
  const { address, child } = await workerPeer({ PROPIPE_MAX_MESSAGE_MB: '1', PROPIPE_MAX_TENSOR_MB: '2', PROPIPE_TOKEN: 'tok' });
  try {
    assert.match(address, /^socket:\/\/127\.0\.0\.1:\d+$/, 'the default plane is the socket data plane');
    const tm = (shape: number[]) => ({ dtype: 'float32', shape, data: Buffer.alloc(0) });
    assert.match(await rawExchange(address, 'tok', [header({ tensor: tm([1024, 1024]) })]), /4194304 bytes, above the data plane's limit of 2097152 bytes \(PROPIPE_MAX_TENSOR_MB\)/);
    assert.match(await rawExchange(address, 'tok', [record(RECORD.FRAME, Buffer.alloc(1024 * 1024 + 1))]), /record of 1048577 bytes is above PROPIPE_MAX_MESSAGE_MB \(1048576 bytes\)/);
    // Within both limits (2 MB tensor), a frame is taken: the link stays open and nothing is refused.
    const mailbox = new Mailbox();
    const link = new DataPlaneLink(address, mailbox, () => null, { token: 'tok' });
    await link.sendUp({ kind: 'ACTIVATION', step: 0, microBatch: 0, tensor: { dtype: 'float32', shape: [512, 1024], data: new Float32Array(512 * 1024) } });
    // A refusal would fail the link's mailbox, and with it this wait.
    await mailbox.until(new Promise((r) => setTimeout(r, 1000)));
    link.close();
  } finally {
    child.kill('SIGKILL');
  }
});
