// Access: TLS (mutual) on gRPC and a bearer token on every call. A missing or wrong token gets
// UNAUTHENTICATED and changes nothing; a plaintext client cannot talk to a TLS service.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { makeLocalCredentials } from '../supervisor/credentials.ts';
import { tensorMsg } from '../proto/frames.ts';
import { CHANNEL_OPTIONS, loadProto } from '../proto/load.ts';
import type { FrameMsg } from '../proto/messages.ts';
import { callMetadata, channelCredentials, checkToken, loadSecurity, serverCredentials } from '../proto/security.ts';
import { PeerServer } from '../worker/peer.ts';

type SendClient = { Send(f: FrameMsg, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: unknown) => void): void; close(): void };

test('the peer service over mutual TLS accepts only calls with the job token', async () => {
  const c = makeLocalCredentials(fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-sec-')));
  const sec = loadSecurity({ tlsCert: c.tlsCert, tlsKey: c.tlsKey, tlsCa: c.tlsCa, mutual: true, tokenFile: c.tokenFile });
  const server = new PeerServer(serverCredentials(sec), (md) => checkToken(sec, md));
  const address = await server.start('127.0.0.1', 0);
  const { Peer } = loadProto();
  const frame: FrameMsg = { kind: 'ACTIVATION', step: 1, microBatch: 0, tensor: tensorMsg({ dtype: 'float32', shape: [1, 1, 2], data: Float32Array.of(1, 2) }), labels: null, inputIds: null, positionIds: null, teacher: null, stepTokens: 0, chunk: 0, chunks: 1 };
  const send = (creds: grpc.ChannelCredentials, md: grpc.Metadata) =>
    new Promise<grpc.ServiceError | null>((resolve) => {
      const client = new Peer(address, creds, CHANNEL_OPTIONS) as unknown as SendClient;
      client.Send(frame, md, { deadline: Date.now() + 5000 }, (e) => {
        client.close();
        resolve(e);
      });
    });
  const none = await send(channelCredentials(sec), new grpc.Metadata());
  assert.equal(none?.code, grpc.status.UNAUTHENTICATED);
  assert.match(none!.details, /missing bearer token/);
  const wrong = await send(channelCredentials(sec), callMetadata({ token: 'not-the-token' }));
  assert.equal(wrong?.code, grpc.status.UNAUTHENTICATED);
  const plaintext = await send(grpc.credentials.createInsecure(), callMetadata(sec));
  assert.equal(plaintext?.code, grpc.status.UNAVAILABLE, 'a plaintext client cannot reach a TLS service');
  // Nothing of those calls reached the mailbox; the right token does.
  assert.equal(await send(channelCredentials(sec), callMetadata(sec)), null);
  const got = await server.mailbox.take('ACTIVATION', 1, 0);
  assert.deepEqual(got.tensor.data, Float32Array.of(1, 2));
  await server.stop();
  fs.rmSync(c.dir, { recursive: true, force: true });
});

test('security options are all-or-nothing for TLS and name missing files', () => {
  assert.throws(() => loadSecurity({ tlsCert: '/x.crt' }), /--tls-cert, --tls-key and --tls-ca together/);
  assert.throws(() => loadSecurity({ tokenFile: '/nonexistent/token' }), /cannot read the token file \/nonexistent\/token/);
});
