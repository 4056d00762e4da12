// Access: TLS (mutual) on gRPC and a bearer token on every call of both services. A missing or wrong
// token gets UNAUTHENTICATED and changes nothing (no frame reaches the mailbox, no worker registers);
// a plaintext client, or a TLS client without a certificate of the job's CA, cannot talk to a mutual
// TLS service; NATS runs over TLS; and nothing listens beyond loopback without TLS and a token.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { makeLocalCredentials } from '../supervisor/credentials.ts';
import { startNatsServer } from '../supervisor/nats-server.ts';
import { startCoordinator } from '../coordinator/server.ts';
import { checkListener, checkNatsUrl, isLoopback } from '../proto/exposure.ts';
import { tensorMsg } from '../proto/frames.ts';
import { CHANNEL_OPTIONS, loadProto } from '../proto/load.ts';
import type { FrameMsg } from '../proto/messages.ts';
import { callMetadata, channelCredentials, checkToken, loadSecurity, serverCredentials, type Security } from '../proto/security.ts';
import { codec, connectNats } from '../proto/signals.ts';
import { parseRunConfig } from '../recipe/run-config.ts';
import { Mailbox } from '../worker/mailbox.ts';
import { PeerLink, PeerServer } from '../worker/peer.ts';
import { propipe } from './support/cli.ts';
import { spy } from './support/mailbox-spy.ts';
import { makeTiny } from './support/tiny.ts';

type Unary = (req: unknown, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: unknown) => void) => void;

function call(ctor: grpc.ServiceClientConstructor, address: string, creds: grpc.ChannelCredentials, method: string, req: unknown, md: grpc.Metadata): Promise<grpc.ServiceError | null> {
  return new Promise((resolve) => {
    const client = new ctor(address, creds, CHANNEL_OPTIONS);
    ((client as unknown as Record<string, Unary>)[method]).call(client, req, md, { deadline: Date.now() + 5000 }, (e) => {
      client.close();
      resolve(e);
    });
  });
}

const tmpCreds = () => makeLocalCredentials(fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-sec-')));

test('the peer service over mutual TLS: only a client with the job token and a job certificate delivers a frame', async () => {
  const c = tmpCreds();
  const other = tmpCreds();
  const sec = loadSecurity({ tlsCert: c.tlsCert, tlsKey: c.tlsKey, tlsCa: c.tlsCa, mutual: true, tokenFile: c.tokenFile });
  const server = new PeerServer(serverCredentials(sec), (md) => checkToken(sec, md));
  const address = await server.start('127.0.0.1', 0);
  const delivered = spy(server.mailbox);
  const { Peer } = loadProto();
  // Each attempt carries its own marker value, so any frame that got through is identified.
  const frame = (marker: number): FrameMsg => ({ kind: 'ACTIVATION', step: 1, microBatch: 0, tensor: tensorMsg({ dtype: 'float32', shape: [1, 1, 1], data: Float32Array.of(marker) }), labels: null, inputIds: null, positionIds: null, teacher: null, stepTokens: 0, chunk: 0, chunks: 1, epoch: 0 });
  const send = (creds: grpc.ChannelCredentials, md: grpc.Metadata, marker: number) => call(Peer, address, creds, 'Send', frame(marker), md);

  const none = await send(channelCredentials(sec), new grpc.Metadata(), 101);
  assert.equal(none?.code, grpc.status.UNAUTHENTICATED);
  assert.match(none!.details, /missing bearer token/);
  const wrong = await send(channelCredentials(sec), callMetadata({ token: 'not-the-token' }), 102);
  assert.equal(wrong?.code, grpc.status.UNAUTHENTICATED);
  assert.match(wrong!.details, /wrong bearer token/);
  const plaintext = await send(grpc.credentials.createInsecure(), callMetadata(sec), 103);
  assert.equal(plaintext?.code, grpc.status.UNAVAILABLE, 'a plaintext client cannot reach a TLS service');
  const noClientCert = await send(grpc.credentials.createSsl(fs.readFileSync(c.tlsCa)), callMetadata(sec), 104);
  assert.equal(noClientCert?.code, grpc.status.UNAVAILABLE, 'mutual TLS requires a client certificate');
  const foreignCert = await send(grpc.credentials.createSsl(fs.readFileSync(c.tlsCa), fs.readFileSync(other.tlsKey), fs.readFileSync(other.tlsCert)), callMetadata(sec), 105);
  assert.equal(foreignCert?.code, grpc.status.UNAVAILABLE, 'a client certificate of another CA is refused');
  assert.equal(delivered.length, 0, 'no refused call delivered a frame');

  assert.equal(await send(channelCredentials(sec), callMetadata(sec), 1), null);
  assert.deepEqual(delivered.map((f) => [...f.tensor.data]), [[1]], 'exactly the authorised frame was delivered');

  // The Exchange stream checks the token too: a link with a wrong token delivers nothing and fails.
  const below = new Mailbox();
  const link = new PeerLink(address, below, () => null, channelCredentials(sec), callMetadata({ token: 'not-the-token' }));
  await link.sendUp({ kind: 'ACTIVATION', step: 2, microBatch: 0, tensor: { dtype: 'float32', shape: [1, 1, 1], data: Float32Array.of(106) } }).catch(() => undefined);
  const noAnswer = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the stream was not refused within 5 s')), 5000).unref());
  await assert.rejects(Promise.race([below.take('GRADIENT', 2, 0), noAnswer]), /UNAUTHENTICATED|wrong bearer token/);
  link.close();
  const good = new PeerLink(address, new Mailbox(), () => null, channelCredentials(sec), callMetadata(sec));
  await good.sendUp({ kind: 'ACTIVATION', step: 3, microBatch: 0, tensor: { dtype: 'float32', shape: [1, 1, 1], data: Float32Array.of(3) } });
  assert.deepEqual([...(await server.mailbox.take('ACTIVATION', 3, 0)).tensor.data], [3]);
  assert.deepEqual(delivered.map((f) => f.tensor.data[0]), [1, 3], 'the stream with the wrong token delivered nothing');
  good.close();
  await server.stop();
  fs.rmSync(c.dir, { recursive: true, force: true });
  fs.rmSync(other.dir, { recursive: true, force: true });
});

test('the coordinator service checks the token on every call: a worker without it never registers', async () => {
  const tiny = await makeTiny();
  const c = tmpCreds();
  const sec: Security = loadSecurity({ tlsCert: c.tlsCert, tlsKey: c.tlsKey, tlsCa: c.tlsCa, mutual: true, tokenFile: c.tokenFile });
  const nats = await startNatsServer({ user: c.natsUser, pass: c.natsPass, tls: { cert: c.tlsCert, key: c.tlsKey } });
  assert.match(nats.url, /^tls:\/\//);
  const run = parseRunConfig({ model: tiny.model, dataset: tiny.train, output_dir: path.join(tiny.root, 'out'), train_type: 'llamapro', llamapro_new_blocks: 2 });
  const coord = await startCoordinator({ run, workers: 1, schedule: '1f1b', microBatches: 1, host: '127.0.0.1', port: 0, natsUrl: nats.url, security: sec });
  const { Coordinator } = loadProto();
  const creds = channelCredentials(sec);
  const register = { workerId: 'w0', peerAddress: '127.0.0.1:1', device: 'cpu', memoryBytes: 2 ** 32 };
  try {
    for (const [method, req] of [['Register', register], ['ReportStep', { workerId: 'w0', rank: 0, step: 0, epoch: 1 }], ['CommitShard', { workerId: 'w0', rank: 0, step: 2, file: 'shard-00000.safetensors' }], ['Status', {}], ['CurrentStage', { epoch: 1 }], ['ReportExport', { workerId: 'w0', finalDir: '/tmp/x', adapterDir: '/tmp/y' }]] as const) {
      const none = await call(Coordinator, coord.address, creds, method, req, new grpc.Metadata());
      assert.equal(none?.code, grpc.status.UNAUTHENTICATED, `${method} without a token`);
      const wrong = await call(Coordinator, coord.address, creds, method, req, callMetadata({ token: 'nope' }));
      assert.equal(wrong?.code, grpc.status.UNAUTHENTICATED, `${method} with a wrong token`);
    }
    assert.equal(coord.job.phase, 'waiting', 'no worker registered without the token');
    assert.equal(coord.job.epoch, 0);
    assert.ok(!fs.existsSync(path.join(tiny.root, 'out', 'result.json')), 'ReportExport without the token wrote nothing');
    // With the token the one expected worker is assigned at once.
    assert.equal(await call(Coordinator, coord.address, creds, 'Register', register, callMetadata(sec)), null);
    assert.equal(coord.job.phase, 'running');
  } finally {
    await coord.close();
    await nats.stop();
    fs.rmSync(c.dir, { recursive: true, force: true });
  }
});

test('NATS over TLS: tls:// URLs are verified against the job CA and carry the credentials', async () => {
  const c = tmpCreds();
  const sec = loadSecurity({ tlsCert: c.tlsCert, tlsKey: c.tlsKey, tlsCa: c.tlsCa, mutual: true });
  const nats = await startNatsServer({ user: c.natsUser, pass: c.natsPass, tls: { cert: c.tlsCert, key: c.tlsKey } });
  try {
    const nc = await connectNats(nats.url, 'sec-test', sec);
    const sub = nc.subscribe('x');
    nc.publish('x', codec.encode({ hello: 1 }));
    for await (const m of sub) {
      assert.deepEqual(codec.decode(m.data), { hello: 1 });
      break;
    }
    await nc.close();
    // Without the job CA the server's certificate does not verify.
    await assert.rejects(connectNats(nats.url, 'no-ca', {}));
  } finally {
    await nats.stop();
    fs.rmSync(c.dir, { recursive: true, force: true });
  }
});

test('secure by default: nothing serves beyond loopback without TLS and a token unless --insecure', async () => {
  const tiny = await makeTiny();
  const flags = ['--model', tiny.model, '--dataset', tiny.train, '--output-dir', path.join(tiny.root, 'out'), '--workers', '2'];
  const coord = propipe(['coordinator', ...flags, '--host', '0.0.0.0', '--nats', 'nats://127.0.0.1:1']);
  assert.equal(coord.status, 2, coord.stderr);
  assert.match(coord.stderr, /refusing to serve the coordinator on 0\.0\.0\.0 without TLS \(--tls-cert, --tls-key, --tls-ca\) and a bearer token .*--insecure/);
  const natsRemote = propipe(['coordinator', ...flags, '--nats', 'nats://10.1.2.3:4222']);
  assert.equal(natsRemote.status, 2, natsRemote.stderr);
  assert.match(natsRemote.stderr, /refusing NATS at 10\.1\.2\.3:4222 without credentials/);
  const worker = propipe(['worker', '--coordinator', '127.0.0.1:1', '--host', '10.0.0.7']);
  assert.equal(worker.status, 2, worker.stderr);
  assert.match(worker.stderr, /refusing to serve the worker peer service on 10\.0\.0\.7/);

  const c = tmpCreds();
  const tlsOnly = loadSecurity({ tlsCert: c.tlsCert, tlsKey: c.tlsKey, tlsCa: c.tlsCa });
  assert.throws(() => checkListener('coordinator', '0.0.0.0', tlsOnly, false), /without a bearer token/);
  assert.doesNotThrow(() => checkListener('coordinator', '0.0.0.0', { ...tlsOnly, token: 't' }, false));
  assert.doesNotThrow(() => checkListener('coordinator', '0.0.0.0', {}, true), '--insecure accepts the risk');
  assert.doesNotThrow(() => checkNatsUrl('tls://u:p@nats.example:4222', false));
  assert.throws(() => checkNatsUrl('tls://nats.example:4222', false), /without credentials/);
  assert.doesNotThrow(() => checkNatsUrl('nats://u:p@nats.example:4222', false), 'credentials on plain TCP (the Kubernetes manifests)');
  assert.doesNotThrow(() => checkNatsUrl('nats://10.1.2.3:4222', true));
  for (const h of ['127.0.0.1', '127.3.2.1', 'localhost', '::1', '[::1]']) assert.ok(isLoopback(h), h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', 'coordinator']) assert.ok(!isLoopback(h), h);
  fs.rmSync(c.dir, { recursive: true, force: true });
});

test('security options are all-or-nothing for TLS and name missing files', () => {
  assert.throws(() => loadSecurity({ tlsCert: '/x.crt' }), /--tls-cert, --tls-key and --tls-ca together/);
  assert.throws(() => loadSecurity({ tokenFile: '/nonexistent/token' }), /cannot read the token file \/nonexistent\/token/);
});

test('a nats-server that cannot start says why at once (here: a missing certificate), instead of a 10 s wait', async () => {
  const t0 = Date.now();
  const missing = path.join(os.tmpdir(), 'propipe-no-such-cert.pem');
  await assert.rejects(startNatsServer({ tls: { cert: missing, key: missing } }), /nats-server exited with code \d+ before listening on 127\.0\.0\.1:\d+: .*propipe-no-such-cert/);
  assert.ok(Date.now() - t0 < 8000, `refused after ${Date.now() - t0} ms`);
});
