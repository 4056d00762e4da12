// Activation transfer throughput over loopback, between two processes: propipe's peer frames on both
// data planes — the gRPC peer stream (PeerLink -> PeerServer) and the socket data plane (DataPlaneLink
// -> DataPlaneServer), activations up and gradients down, the receiver taking each tensor from its
// mailbox as a Float32Array — next to a raw length-prefixed TCP socket, a raw mutual-TLS socket and a
// plain grpc-js bidi stream of whole messages, all measured in the same run. Chunk sizes and channel
// options of the gRPC stream are swept. Every trial runs right after a raw TCP trial of the same size
// (and, over TLS, a raw TLS trial too), cases in a new random order every round, so each case is
// reported as the median ratio to the raw socket measured moments apart (the machine's speed drifts
// with other load); with it the best MB/s, the median, and the CPU time both processes spent per MB.
// Prints one JSON document to stdout; progress goes to stderr.
//
//   node --import tsx bench/transfer.ts [--sizes 1,4,16,64] [--total-mb 128] [--trials 5]
//        [--chunks 64,256,1024,4096,16384] [--sweep-sizes 4,16] [--variants window-64k,tls,socket-tls,...]
//        [--variant-sizes 4,16] [--planes current,socket,tls,socket-tls] [--quick]
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { makeLocalCredentials } from '../supervisor/credentials.ts';
import { DEFAULT_CHUNK_BYTES, type OutFrame } from '../proto/frames.ts';
import { loadSecurity, type Security, type SecurityFiles } from '../proto/security.ts';
import { Mailbox } from '../worker/mailbox.ts';
import { PEER_CHANNEL_OPTIONS } from '../worker/peer.ts';
import { child } from './transfer-receiver.ts';
import { type FromChild, KB, MB, type Mode, RAW_OPTIONS, RAW_SERVICE, SECURE, SOCKET_PLANE, type ToChild, VARIANTS, benchLink, benchServer, cpuMs, frame } from './transfer-ipc.ts';

// ---------------------------------------------------------------------------------------------
// The sending process: sets up every channel, runs the trials and prints the JSON.

class Remote {
  private queue: FromChild[] = [];
  private waiters: ((m: FromChild) => void)[] = [];

  constructor(readonly proc: ChildProcess) {
    proc.on('message', (m: FromChild) => {
      if (m.t === 'error') {
        process.stderr.write(`receiver failed: ${m.message}\n`);
        process.exit(1);
      }
      const w = this.waiters.shift();
      if (w) w(m);
      else this.queue.push(m);
    });
  }

  async next<T extends FromChild['t']>(want: T): Promise<Extract<FromChild, { t: T }>> {
    const r = this.queue.shift() ?? (await new Promise<FromChild>((res) => this.waiters.push(res)));
    if (r.t !== want) throw new Error(`expected '${want}' from the receiver, got '${r.t}'`);
    return r as Extract<FromChild, { t: T }>;
  }

  ask<T extends FromChild['t']>(m: ToChild, want: T): Promise<Extract<FromChild, { t: T }>> {
    this.proc.send(m);
    return this.next(want);
  }
}

interface Trial {
  seconds: number;
  /** Time the sender spent inside its send calls (what a compute loop would block for). */
  sendSeconds: number;
  senderCpuMs: number;
  receiverCpuMs: number;
}

/** One way to move `count` tensors to the other process; resolves when the receiver holds them all. */
type Channel = (count: number, data: Float32Array, chunkBytes: number) => Promise<Trial>;

interface Case {
  mode: 'tcp' | 'tls' | 'grpc-plain' | 'peer';
  variant?: string;
  direction?: 'up' | 'down';
  chunkBytes?: number;
  tensorMB: number;
  channel: Channel;
  trials: Trial[];
  /** A raw TCP trial of the same size run just before each trial of this case. */
  tcpTrials: Trial[];
  /** Cases over TLS: a raw TLS trial of the same size run just before each trial as well. */
  tlsTrials: Trial[];
}

export interface TransferResult {
  mode: string;
  variant?: string;
  direction?: 'up' | 'down';
  chunkBytes?: number;
  tensorMB: number;
  tensors: number;
  /** Best trial. */
  mbPerSec: number;
  medianMBs: number;
  trialsMBs: number[];
  /** Best trial: time per tensor from the first byte sent to the receiver holding it, ms. */
  msPerTensor: number;
  /** Best trial: time the sender was blocked in send per tensor, ms. */
  sendBlockMsPerTensor: number;
  /** Median over trials: CPU milliseconds per MB moved, in the sending and the receiving process. */
  senderCpuMsPerMB: number;
  receiverCpuMsPerMB: number;
  /** Median over trials of this trial's MB/s over the raw TCP trial run just before it (same size). */
  vsTcp?: number;
  /** The same against the raw TLS trial run just before it (cases over TLS). */
  vsTls?: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const flag = (name: string, def: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < argv.length && !argv[i + 1].startsWith('--') ? argv[i + 1] : def;
  };
  const quick = argv.includes('--quick');
  const sizes = flag('sizes', quick ? '1,16' : '1,4,16,64').split(',').map(Number);
  const totalBytes = Number(flag('total-mb', quick ? '32' : '128')) * MB;
  const trials = Number(flag('trials', quick ? '3' : '5'));
  const loadBefore = os.loadavg().map((x) => round(x, 2));
  const chunkSizes = flag('chunks', '64,256,1024,4096,16384').split(',').map((k) => Number(k) * KB);
  const variants = flag('variants', Object.keys(VARIANTS).join(',')).split(',').filter((v) => v && v !== 'current');
  // Peer paths run at every size: the gRPC stream ('current') and the socket data plane, over TCP and mutual TLS.
  const planeNames = flag('planes', 'current,socket,tls,socket-tls').split(',').filter(Boolean);
  const variantSizes = flag('variant-sizes', quick ? '16' : '4,16').split(',').map(Number).filter((s) => sizes.includes(s));
  const sweepSizes = flag('sweep-sizes', quick ? '16' : '4,16').split(',').map(Number).filter((s) => sizes.includes(s));
  for (const v of [...variants, ...planeNames]) if (!VARIANTS[v] && !SOCKET_PLANE.has(v)) throw new Error(`unknown variant '${v}' (have ${Object.keys(VARIANTS).join(', ')})`);
  const source = new Float32Array((Math.max(...sizes) * MB) / 4);
  for (let i = 0; i < source.length; i++) source[i] = Math.sin(i);

  // The child runs with this process's flags (--import tsx, and --cpu-prof when profiling).
  const execArgv = process.execArgv.some((a) => a.includes('tsx')) ? process.execArgv : ['--import', 'tsx', ...process.execArgv];
  const proc = fork(fileURLToPath(import.meta.url), ['--child'], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const remote = new Remote(proc);
  const timed = async (mode: Mode, id: number, count: number, step: number, sendAll: () => Promise<number>, ack: () => Promise<unknown>): Promise<Trial> => {
    await remote.ask({ t: 'expect', mode, id, count, step }, 'ready');
    const cpu = process.cpuUsage();
    const t0 = performance.now();
    const blocked = await sendAll();
    await ack();
    const seconds = (performance.now() - t0) / 1000;
    const senderCpuMs = cpuMs(cpu);
    const receiverCpuMs = (await remote.next('done')).cpuMs;
    return { seconds, sendSeconds: blocked / 1000, senderCpuMs, receiverCpuMs };
  };

  // Mutual TLS and a bearer token, as `propipe launch` gives the workers (only when a TLS variant runs).
  const secure = [...variants, ...planeNames].some((v) => SECURE.has(v));
  let sec: Security = {};
  let credsDir: string | null = null;
  if (secure) {
    credsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-creds-'));
    const c = makeLocalCredentials(credsDir);
    const files: SecurityFiles = { tlsCert: c.tlsCert, tlsKey: c.tlsKey, tlsCa: c.tlsCa, mutual: true, tokenFile: c.tokenFile };
    sec = loadSecurity(files);
    await remote.ask({ t: 'creds', files }, 'ok');
  }

  // Raw TCP (and TLS) sockets, length-prefixed: the ceiling for one stream on this machine.
  const socketChannel = async (withTls: boolean): Promise<Channel> => {
    const port = (await remote.ask({ t: 'tcp', secure: withTls }, 'port')).port;
    const sock = withTls ? tls.connect({ host: '127.0.0.1', port, key: sec.tls!.key, cert: sec.tls!.cert, ca: sec.tls!.ca }) : net.connect(port, '127.0.0.1');
    await once(sock, withTls ? 'secureConnect' : 'connect');
    sock.setNoDelay(true);
    closers.push(() => void sock.destroy());
    return (count, data) => {
      const header = Buffer.alloc(8);
      header.writeBigUInt64LE(BigInt(data.byteLength));
      const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      const ack = once(sock, 'data');
      return timed('tcp', 0, count, 0, async () => {
        let blocked = 0;
        for (let i = 0; i < count; i++) {
          const s = performance.now();
          sock.write(header);
          if (!sock.write(body)) await once(sock, 'drain');
          blocked += performance.now() - s;
        }
        return blocked;
      }, () => ack);
    };
  };
  const closers: (() => Promise<void> | void)[] = [];
  const tcp = await socketChannel(false);
  const tlsRaw = secure ? await socketChannel(true) : null;

  // Plain grpc-js bidi stream, one whole message per tensor, raw bytes (no protobuf), default options.
  const plainPort = (await remote.ask({ t: 'plain' }, 'port')).port;
  const RawClient = grpc.makeGenericClientConstructor(RAW_SERVICE, 'Raw');
  const rawClient = new RawClient(`127.0.0.1:${plainPort}`, grpc.credentials.createInsecure(), RAW_OPTIONS);
  const rawStream = (rawClient as unknown as { Stream(): grpc.ClientDuplexStream<Buffer, Buffer> }).Stream();
  rawStream.on('error', () => undefined);
  const plain: Channel = (count, data) => {
    const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const ack = once(rawStream, 'data');
    return timed('plain', 0, count, 0, async () => {
      let blocked = 0;
      for (let i = 0; i < count; i++) {
        const s = performance.now();
        if (!rawStream.write(body)) await once(rawStream, 'drain');
        blocked += performance.now() - s;
      }
      return blocked;
    }, () => ack);
  };

  // Peer frames up (activations: this process holds the PeerLink) and down (gradients: this process
  // holds the PeerServer); the receiver takes each tensor from its mailbox and answers once.
  let nextId = 1;
  let step = 1;
  const peerChannel = async (variant: string, direction: 'up' | 'down'): Promise<Channel> => {
    const id = nextId++;
    let sendFrame: (f: OutFrame, chunkBytes: number) => Promise<void>;
    let mailbox: Mailbox;
    if (direction === 'up') {
      const address = (await remote.ask({ t: 'peer-serve', id, variant }, 'address')).address;
      mailbox = new Mailbox();
      const link = benchLink(variant, address, mailbox, sec);
      sendFrame = (f, c) => {
        link.chunkBytes = c;
        return link.sendUp(f);
      };
      closers.push(() => link.close());
    } else {
      const server = benchServer(variant, sec);
      const address = await server.start('127.0.0.1', 0);
      await remote.ask({ t: 'peer-connect', id, variant, address }, 'ok');
      mailbox = server.mailbox;
      await mailbox.take('ACTIVATION', 0, 0);
      sendFrame = (f, c) => {
        server.chunkBytes = c;
        return server.sendDown(f);
      };
      closers.push(() => server.stop());
    }
    return (count, data, chunkBytes) => {
      const first = step;
      step += count + 1;
      const kind = direction === 'up' ? 'ACTIVATION' : 'GRADIENT';
      return timed(direction === 'up' ? 'peer-up' : 'peer-down', id, count, first, async () => {
        let blocked = 0;
        for (let i = 0; i < count; i++) {
          const s = performance.now();
          await sendFrame(frame(kind, first + i, data), chunkBytes);
          blocked += performance.now() - s;
        }
        return blocked;
      }, () => mailbox.take(direction === 'up' ? 'GRADIENT' : 'ACTIVATION', first, 0));
    };
  };

  const cases: Case[] = [];
  const add = (c: Omit<Case, 'trials' | 'tcpTrials' | 'tlsTrials'>) => cases.push({ ...c, trials: [], tcpTrials: [], tlsTrials: [] });
  const opened = new Map<string, Record<'up' | 'down', Channel>>();
  const both = async (v: string) => opened.get(v) ?? opened.set(v, { up: await peerChannel(v, 'up'), down: await peerChannel(v, 'down') }).get(v)!;
  // Every size: the gRPC peer stream and the socket data plane, over TCP and (as launch runs them) over mutual TLS.
  const planes: [string, Record<'up' | 'down', Channel>][] = [];
  for (const p of planeNames) planes.push([p, await both(p)]);
  for (const size of sizes) {
    add({ mode: 'tcp', tensorMB: size, channel: tcp });
    add({ mode: 'grpc-plain', tensorMB: size, channel: plain });
    if (tlsRaw) add({ mode: 'tls', tensorMB: size, channel: tlsRaw });
    for (const [variant, ch] of planes) for (const direction of ['up', 'down'] as const) add({ mode: 'peer', variant, direction, chunkBytes: Math.min(DEFAULT_CHUNK_BYTES, size * MB), tensorMB: size, channel: ch[direction] });
  }
  // Chunk sizes with the workers' options, both directions (a chunk above the tensor size is one chunk).
  for (const size of sweepSizes) {
    const chunks = [...new Set(chunkSizes.map((c) => Math.min(c, size * MB)))].filter((c) => c !== Math.min(DEFAULT_CHUNK_BYTES, size * MB)).sort((a, b) => a - b);
    const current = await both('current');
    for (const direction of ['up', 'down'] as const) for (const c of chunks) add({ mode: 'peer', variant: 'current', direction, chunkBytes: c, tensorMB: size, channel: current[direction] });
  }
  // Channel options at the default chunk size (the TLS and socket cases run at every size above).
  for (const variant of variants.filter((v) => !SECURE.has(v) && !SOCKET_PLANE.has(v))) {
    for (const direction of ['up', 'down'] as const) {
      const ch = await peerChannel(variant, direction);
      for (const size of variantSizes) add({ mode: 'peer', variant, direction, chunkBytes: Math.min(DEFAULT_CHUNK_BYTES, size * MB), tensorMB: size, channel: ch });
    }
  }

  const label = (c: Case) => [c.mode, c.variant, c.direction, c.chunkBytes ? `${c.chunkBytes / KB}K` : ''].filter(Boolean).join(' ');
  const dataOf = (c: Case) => source.subarray(0, (c.tensorMB * MB) / 4);
  const countOf = (c: Case) => Math.max(2, Math.round(totalBytes / (c.tensorMB * MB)));
  const tcpOf = new Map(cases.filter((c) => c.mode === 'tcp').map((c) => [c.tensorMB, c]));
  const tlsOf = new Map(cases.filter((c) => c.mode === 'tls').map((c) => [c.tensorMB, c]));
  process.stderr.write(`transfer: ${cases.length} cases × ${trials} trials, each after a raw TCP trial of its size, in a new random order every round\n`);
  for (const c of cases) await c.channel(2, dataOf(c), c.chunkBytes ?? DEFAULT_CHUNK_BYTES); // warm-up: windows, JIT
  let seed = 12345;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let t = 0; t < trials; t++) {
    const order = cases.map((c) => ({ c, k: random() })).sort((x, y) => x.k - y.k).map((x) => x.c);
    for (const c of order) {
      const ref = tcpOf.get(c.tensorMB)!;
      const tcpTrial = await ref.channel(countOf(ref), dataOf(ref), DEFAULT_CHUNK_BYTES);
      ref.trials.push(tcpTrial);
      if (c === ref) continue;
      c.tcpTrials.push(tcpTrial);
      const tlsRef = c.variant && SECURE.has(c.variant) ? tlsOf.get(c.tensorMB) : undefined;
      if (tlsRef) c.tlsTrials.push(await tlsRef.channel(countOf(tlsRef), dataOf(tlsRef), DEFAULT_CHUNK_BYTES));
      c.trials.push(await c.channel(countOf(c), dataOf(c), c.chunkBytes ?? DEFAULT_CHUNK_BYTES));
    }
    process.stderr.write(`  round ${t + 1}/${trials} done\n`);
  }

  const results: TransferResult[] = cases.map((c) => {
    const count = countOf(c);
    const mb = count * c.tensorMB;
    const mbs = c.trials.map((t) => mb / t.seconds);
    const best = c.trials[mbs.indexOf(Math.max(...mbs))];
    const r: TransferResult = {
      mode: c.mode, variant: c.variant, direction: c.direction, chunkBytes: c.chunkBytes, tensorMB: c.tensorMB, tensors: count,
      mbPerSec: round(Math.max(...mbs)), medianMBs: round(median(mbs)), trialsMBs: mbs.map((x) => round(x)),
      msPerTensor: round((best.seconds / count) * 1000, 3), sendBlockMsPerTensor: round((best.sendSeconds / count) * 1000, 3),
      senderCpuMsPerMB: round(median(c.trials.map((t) => t.senderCpuMs / mb)), 3), receiverCpuMsPerMB: round(median(c.trials.map((t) => t.receiverCpuMs / mb)), 3),
      ...(c.tcpTrials.length ? { vsTcp: round(median(c.trials.map((t, i) => (mb / t.seconds) / ((countOf(tcpOf.get(c.tensorMB)!) * c.tensorMB) / c.tcpTrials[i].seconds))), 3) } : {}),
      ...(c.tlsTrials.length ? { vsTls: round(median(c.trials.map((t, i) => (mb / t.seconds) / ((countOf(tlsOf.get(c.tensorMB)!) * c.tensorMB) / c.tlsTrials[i].seconds))), 3) } : {}),
    };
    process.stderr.write(`${label(c).padEnd(30)} ${String(c.tensorMB).padStart(3)} MB: best ${r.mbPerSec.toFixed(0).padStart(5)} MB/s, median ${r.medianMBs.toFixed(0).padStart(5)}${r.vsTcp !== undefined ? `, ×${r.vsTcp.toFixed(2)} of TCP` : ''}${r.vsTls !== undefined ? `, ×${r.vsTls.toFixed(2)} of TLS` : ''}; cpu ms/MB send ${r.senderCpuMsPerMB.toFixed(2)} recv ${r.receiverCpuMsPerMB.toFixed(2)}\n`);
    return r;
  });

  rawStream.end();
  rawClient.close();
  for (const close of closers) await close();
  if (credsDir) fs.rmSync(credsDir, { recursive: true, force: true });
  proc.send({ t: 'exit' } satisfies ToChild);

  // Summary per tensor size: raw TCP, plain grpc-js, and the peer frames at the default chunk size with
  // the workers' options; `vsTcp` is the median ratio to the raw TCP trial run just before each trial.
  const find = (pred: (r: TransferResult) => boolean) => results.filter(pred);
  const one = (pred: (r: TransferResult) => boolean) => find(pred)[0];
  const summary = sizes.map((size) => {
    const tcpR = one((r) => r.mode === 'tcp' && r.tensorMB === size);
    const plainR = one((r) => r.mode === 'grpc-plain' && r.tensorMB === size);
    const peer = (direction: 'up' | 'down', variant = 'current') => {
      const rows = find((r) => r.mode === 'peer' && r.variant === variant && r.direction === direction && r.tensorMB === size);
      const def = rows.find((r) => r.chunkBytes === Math.min(DEFAULT_CHUNK_BYTES, size * MB));
      if (!def) return undefined;
      const best = rows.reduce((x, y) => (y.vsTcp! > x.vsTcp! ? y : x));
      return { MBs: def.mbPerSec, vsTcp: def.vsTcp, ...(def.vsTls !== undefined ? { vsTls: def.vsTls } : {}), cpuMsPerMB: round(def.senderCpuMsPerMB + def.receiverCpuMsPerMB, 2), ...(rows.length > 1 ? { bestChunkKB: best.chunkBytes! / KB, bestChunkVsTcp: best.vsTcp } : {}) };
    };
    const tlsR = one((r) => r.mode === 'tls' && r.tensorMB === size);
    return {
      tensorMB: size,
      tcpMBs: tcpR.mbPerSec,
      tcpCpuMsPerMB: round(tcpR.senderCpuMsPerMB + tcpR.receiverCpuMsPerMB, 2),
      grpcPlain: { MBs: plainR.mbPerSec, vsTcp: plainR.vsTcp, cpuMsPerMB: round(plainR.senderCpuMsPerMB + plainR.receiverCpuMsPerMB, 2) },
      activationsUp: peer('up'),
      gradientsDown: peer('down'),
      socket: { up: peer('up', 'socket'), down: peer('down', 'socket') },
      ...(tlsR ? { tls: { rawMBs: tlsR.mbPerSec, rawVsTcp: tlsR.vsTcp, rawCpuMsPerMB: round(tlsR.senderCpuMsPerMB + tlsR.receiverCpuMsPerMB, 2), grpc: { up: peer('up', 'tls'), down: peer('down', 'tls') }, socket: { up: peer('up', 'socket-tls'), down: peer('down', 'socket-tls') } } } : {}),
    };
  });
  // Chunk sizes (workers' options): ratio to raw TCP per tensor size and direction.
  const chunkTable = sweepSizes.flatMap((size) =>
    (['up', 'down'] as const).map((d) => ({
      tensorMB: size,
      direction: d,
      ...Object.fromEntries(find((r) => r.mode === 'peer' && r.variant === 'current' && r.direction === d && r.tensorMB === size).sort((x, y) => x.chunkBytes! - y.chunkBytes!).map((r) => [`${r.chunkBytes! / KB}K`, r.vsTcp])),
    })),
  );
  // Channel options at the default chunk size: ratio to raw TCP.
  const variantTable = variants.length === 0 ? [] : ['current', ...variants].map((v) => ({
    variant: v,
    ...Object.fromEntries(variantSizes.flatMap((size) => (['up', 'down'] as const).map((d) => [`${d}${size}MB`, one((r) => r.mode === 'peer' && r.variant === v && r.direction === d && r.tensorMB === size && r.chunkBytes === Math.min(DEFAULT_CHUNK_BYTES, size * MB))?.vsTcp]))),
  }));
  const out = {
    bench: 'transfer',
    host: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, loadavgBefore: loadBefore, loadavgAfter: os.loadavg().map((x) => round(x, 2)), node: process.version, grpcJs: JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, '../node_modules/@grpc/grpc-js/package.json'), 'utf8')).version as string },
    setup: {
      note: 'sender in this process, receiver in a forked child, loopback; MB = 2^20 bytes; the receiver holds every tensor as a Float32Array before it acknowledges. This machine is shared and its speed drifts by several times within a minute, so every trial of a case runs right after a raw TCP trial of the same size (cases in a new random order every round): vsTcp is the median of those paired ratios and is the number to compare; MBs is the best trial (other load only ever slows a trial down), medianMBs alongside',
      totalMBPerTrial: totalBytes / MB, trials, defaultChunkBytes: DEFAULT_CHUNK_BYTES, peerChannelOptions: PEER_CHANNEL_OPTIONS,
    },
    summary,
    chunks: chunkTable,
    variants: variantTable,
    results,
  };
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
}

if (process.argv.includes('--child')) void child();
else
  main().catch((err) => {
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    process.exit(1);
  });
