// The receiving process of bench/transfer.ts (forked with --child): takes every tensor as a
// Float32Array and reports its CPU time.
import net from 'node:net';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { loadSecurity, type Security } from '../proto/security.ts';
import { Mailbox } from '../worker/mailbox.ts';
import { type BenchLink, type BenchServer, type FromChild, RAW_OPTIONS, RAW_SERVICE, TOKEN, type ToChild, asFloats, benchLink, benchServer, cpuMs, frame } from './transfer-ipc.ts';

// ---------------------------------------------------------------------------------------------
// The receiving process.

export async function child(): Promise<void> {
  const send = (m: FromChild) => process.send!(m);
  let expected = { count: Infinity, cpu: process.cpuUsage() };
  const finished = () => send({ t: 'done', cpuMs: cpuMs(expected.cpu) });
  let tcpReceived = 0;
  let plainReceived = 0;
  const servers = new Map<number, BenchServer>();
  const links = new Map<number, { link: BenchLink; mailbox: Mailbox }>();
  let sec: Security = {};

  process.on('message', async (m: ToChild) => {
    try {
      switch (m.t) {
        case 'creds':
          sec = loadSecurity(m.files);
          send({ t: 'ok' });
          break;
        case 'tcp': {
          // Length-prefixed tensors; each is copied into its own buffer as it arrives.
          const onSocket = (sock: net.Socket) => {
            sock.setNoDelay(true);
            let header = Buffer.alloc(0);
            let target: Buffer | null = null;
            let filled = 0;
            sock.on('data', (d: Buffer) => {
              let o = 0;
              while (o < d.length) {
                if (!target) {
                  const take = Math.min(8 - header.length, d.length - o);
                  header = Buffer.concat([header, d.subarray(o, o + take)]);
                  o += take;
                  if (header.length < 8) return;
                  target = Buffer.allocUnsafeSlow(Number(header.readBigUInt64LE(0)));
                  header = Buffer.alloc(0);
                  filled = 0;
                }
                const n = d.copy(target, filled, o, Math.min(d.length, o + target.length - filled));
                filled += n;
                o += n;
                if (filled === target.length) {
                  asFloats(target);
                  target = null;
                  if (++tcpReceived === expected.count) {
                    sock.write(Buffer.from([1]));
                    finished();
                  }
                }
              }
            });
          };
          const server = m.secure ? tls.createServer({ key: sec.tls!.key, cert: sec.tls!.cert, ca: sec.tls!.ca, requestCert: true, rejectUnauthorized: true }, onSocket) : net.createServer(onSocket);
          server.listen(0, '127.0.0.1', () => send({ t: 'port', port: (server.address() as net.AddressInfo).port }));
          break;
        }
        case 'plain': {
          const server = new grpc.Server(RAW_OPTIONS);
          server.addService(RAW_SERVICE, {
            Stream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
              call.on('data', (b: Buffer) => {
                asFloats(b);
                if (++plainReceived === expected.count) {
                  call.write(Buffer.from([1]));
                  finished();
                }
              });
              call.on('end', () => call.end());
              call.on('error', () => undefined);
            },
          });
          const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
          send({ t: 'port', port });
          break;
        }
        case 'peer-serve': {
          const server = benchServer(m.variant, sec);
          servers.set(m.id, server);
          send({ t: 'address', address: await server.start('127.0.0.1', 0) });
          break;
        }
        case 'peer-connect': {
          const mailbox = new Mailbox();
          const link = benchLink(m.variant, m.address, mailbox, sec);
          links.set(m.id, { link, mailbox });
          // The server learns its way down from the first frame up.
          await link.sendUp(frame('ACTIVATION', 0, TOKEN));
          send({ t: 'ok' });
          break;
        }
        case 'expect': {
          expected = { count: m.count, cpu: process.cpuUsage() };
          tcpReceived = 0;
          plainReceived = 0;
          send({ t: 'ready' });
          if (m.mode === 'peer-up') {
            const server = servers.get(m.id)!;
            for (let i = 0; i < m.count; i++) (await server.mailbox.take('ACTIVATION', m.step + i, 0)).tensor.data;
            await server.sendDown(frame('GRADIENT', m.step, TOKEN));
            finished();
          } else if (m.mode === 'peer-down') {
            const { link, mailbox } = links.get(m.id)!;
            for (let i = 0; i < m.count; i++) (await mailbox.take('GRADIENT', m.step + i, 0)).tensor.data;
            await link.sendUp(frame('ACTIVATION', m.step, TOKEN));
            finished();
          }
          break;
        }
        case 'exit':
          for (const { link } of links.values()) link.close();
          for (const s of servers.values()) await s.stop();
          process.exit(0);
      }
    } catch (err) {
      send({ t: 'error', message: (err as Error).stack ?? String(err) });
    }
  });
}
