// The socket data plane (`--data-plane socket`): the same peer links as worker/peer.ts — the lower rank
// of a pair connects to the upper one, activations go up, gradients come down the same connection,
// every frame is validated on receipt and carries its assignment epoch — over a raw TLS (or TCP)
// stream of proto/data-wire.ts records instead of a gRPC stream. The connection is mutual TLS with the
// job's certificates; its first record is the job's bearer token, checked before any frame is read.
import net from 'node:net';
import tls from 'node:tls';
import { childLog } from '../common/log.ts';
import { RecoverableError } from '../common/errors.ts';
import { dataPlaneLimits, frameRecord, record, RECORD, RecordReader, type DataPlaneLimits } from '../proto/data-wire.ts';
import { FrameError, type FrameRule, type OutFrame } from '../proto/frames.ts';
import { tokenRefusal, type Security } from '../proto/security.ts';
import { Mailbox } from './mailbox.ts';

const log = childLog({ component: 'data-plane' });

/** How long a connection may take to say who it is before it is closed. */
const HELLO_MS = 10_000;
/** TCP keepalive, as the gRPC channels' (proto/load.ts): a peer behind a cut link is found out, not waited on forever. */
const KEEPALIVE_MS = 10_000;
/** Neighbours find a data plane by this scheme in the advertised peer address (gRPC: plain host:port). */
export const SOCKET_SCHEME = 'socket://';

export function isSocketAddress(address: string): boolean {
  return address.startsWith(SOCKET_SCHEME);
}

function hostPort(address: string): { host: string; port: number } {
  const hp = address.slice(SOCKET_SCHEME.length);
  const i = hp.lastIndexOf(':');
  const port = Number(hp.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`data plane address '${address}' is not ${SOCKET_SCHEME}host:port`);
  return { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port };
}

/**
 * Up to this many bytes may wait in a socket's queue while the rank computes (the gRPC peer stream's
 * flow-control window is the same 16 MiB); beyond it a send waits until its own bytes reach the kernel.
 */
const SEND_QUEUE_BYTES = 16 * 1024 * 1024;

/**
 * Writes a frame: the header, then views of its tensors (no copy). The views stay queued until the
 * kernel takes them, so a sent tensor must not be changed afterwards; the ranks send fresh arrays (graph
 * outputs, wire conversions) and never touch them again. Resolves at once while the queue is within
 * SEND_QUEUE_BYTES, else once this frame's bytes are in the kernel. A write that fails later closes the
 * socket, which fails the link (and the step) on whichever side reads it.
 */
function writeFrame(sock: net.Socket, f: OutFrame, what: string): Promise<void> {
  const parts = frameRecord(f);
  if (sock.destroyed) return Promise.reject(new RecoverableError(`${what} is closed`));
  const flushed = new Promise<void>((resolve, reject) => {
    const done = (err?: Error | null) => (err ? reject(new RecoverableError(`${what} failed: ${err.message}`)) : resolve());
    // One write per buffer, not corked: a TLS socket copies corked buffers into one before encrypting.
    parts.forEach((p, i) => sock.write(p, i === parts.length - 1 ? done : undefined));
  });
  if (sock.writableLength > SEND_QUEUE_BYTES) return flushed;
  flushed.catch(() => undefined);
  return Promise.resolve();
}

/** Sends REFUSED with the reason, then closes (the peer reads the reason before the end). */
function refuse(sock: net.Socket, why: string): void {
  if (sock.destroyed || sock.writableEnded) return;
  sock.end(record(RECORD.REFUSED, why));
  setTimeout(() => sock.destroy(), 2000).unref();
}

/** The data plane server of this rank: receives from the rank below, answers it with gradients. */
export class DataPlaneServer {
  readonly mailbox = new Mailbox();
  expect: FrameRule = () => null;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** The connection of the rank below that carried its latest assignment's frames, with that epoch. */
  private below: { epoch: number; sock: net.Socket } | null = null;
  private belowWaiters: (() => void)[] = [];

  constructor(private readonly sec: Security = {}, private readonly limits: DataPlaneLimits = dataPlaneLimits()) {
    const onSocket = (s: net.Socket) => this.onConnection(s);
    if (sec.tls) {
      const mutual = sec.tls.mutual;
      this.server = tls.createServer({ key: sec.tls.key, cert: sec.tls.cert, ca: sec.tls.ca, requestCert: mutual, rejectUnauthorized: mutual }, onSocket);
      // A client without the job's certificate never gets past the handshake: nothing of it is read.
      this.server.on('tlsClientError', (err: Error) => log.warn({ err: err.message }, 'refused a data plane connection at the TLS handshake'));
    } else this.server = net.createServer(onSocket);
  }

  /** Listens; returns the address neighbours dial (`socket://host:port`). */
  async start(host: string, port: number): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve());
    });
    this.server.on('error', (err: Error) => log.warn({ err: err.message }, 'data plane listener error'));
    const bound = (this.server.address() as net.AddressInfo).port;
    return `${SOCKET_SCHEME}${host.includes(':') ? `[${host}]` : host}:${bound}`;
  }

  private onConnection(sock: net.Socket): void {
    sock.setNoDelay(true);
    sock.setKeepAlive(true, KEEPALIVE_MS);
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => undefined);
    const timer = setTimeout(() => refuse(sock, `no hello within ${HELLO_MS / 1000} s`), HELLO_MS);
    timer.unref();
    sock.on('close', () => clearTimeout(timer));
    let from = '';
    const reader = new RecordReader(
      {
        control: (type, payload) => {
          if (type !== RECORD.HELLO || reader.framesAllowed) throw new FrameError(`data plane: unexpected record ${type} from the rank below`);
          let hello: { authorization?: unknown; from?: unknown };
          try {
            hello = JSON.parse(payload.toString('utf8')) as typeof hello;
          } catch {
            throw new FrameError('data plane: the hello is not JSON');
          }
          from = String(hello.from ?? '');
          const refused = tokenRefusal(this.sec, String(hello.authorization ?? ''));
          if (refused) throw new FrameError(`${refused} bearer token`);
          clearTimeout(timer);
          reader.framesAllowed = true;
          sock.write(record(RECORD.WELCOME));
        },
        frame: (f) => {
          // Gradients of an assignment go down the connection that brought its activations.
          if (!this.below || f.epoch >= this.below.epoch) {
            this.below = { epoch: f.epoch, sock };
            this.belowWaiters.splice(0).forEach((w) => w());
          }
          this.mailbox.deliver(f);
        },
        refused: (why) => {
          throw new FrameError(why);
        },
      },
      () => this.expect,
      this.limits,
    );
    const onData = (d: Buffer) => {
      try {
        reader.push(d);
      } catch (err) {
        log.warn({ err: (err as Error).message, from }, 'refused the data plane stream of the rank below');
        sock.off('data', onData);
        refuse(sock, (err as Error).message);
      }
    };
    sock.on('data', onData);
  }

  /** Sends gradients down to the rank below, on the connection of the frame's assignment. */
  async sendDown(f: OutFrame): Promise<void> {
    const epoch = f.epoch ?? 0;
    // The rank below may not be there yet, or never come (it died, the job is re-assigned): the step's end ends the wait.
    while (this.below?.epoch !== epoch) await this.mailbox.until(new Promise<void>((r) => this.belowWaiters.push(r)));
    await this.mailbox.until(writeFrame(this.below.sock, f, 'the data plane connection of the rank below'));
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The connection from this rank to the data plane of the rank above. */
export class DataPlaneLink {
  private readonly sock: net.Socket;
  private readonly ready: Promise<void>;
  private closed = false;

  constructor(private readonly address: string, private readonly mailbox: Mailbox, expect: FrameRule, sec: Security = {}, from = '', limits: DataPlaneLimits = dataPlaneLimits()) {
    const { host, port } = hostPort(address);
    this.sock = sec.tls
      ? tls.connect({ host, port, ca: sec.tls.ca, ...(sec.tls.mutual ? { key: sec.tls.key, cert: sec.tls.cert } : {}), ...(net.isIP(host) ? { servername: '' } : { servername: host }) })
      : net.connect({ host, port });
    this.sock.setNoDelay(true);
    this.sock.setKeepAlive(true, KEEPALIVE_MS);
    this.sock.write(record(RECORD.HELLO, JSON.stringify({ authorization: sec.token ? `Bearer ${sec.token}` : '', from })));
    let welcome!: () => void;
    let failed!: (e: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => ((welcome = resolve), (failed = reject)));
    this.ready.catch(() => undefined);
    const fail = (why: string) => {
      if (this.closed) return;
      this.closed = true;
      const err = new RecoverableError(`link to ${address} failed: ${why}`);
      failed(err);
      mailbox.fail(err);
      this.sock.destroy();
    };
    const reader = new RecordReader(
      {
        control: (type, payload) => {
          if (type === RECORD.WELCOME && !reader.framesAllowed) {
            reader.framesAllowed = true;
            return welcome();
          }
          if (type === RECORD.REFUSED) throw new FrameError(`refused by the rank above: ${payload.toString('utf8')}`);
          throw new FrameError(`data plane: unexpected record ${type} from the rank above`);
        },
        frame: (f) => mailbox.deliver(f),
        // As on the gRPC link: a frame this rank does not take is dropped (its bytes skipped), not fatal.
        refused: (why, key) => log.warn({ err: why, frame: key }, 'rejected a frame from the rank above'),
      },
      () => expect,
      limits,
    );
    this.sock.on('data', (d: Buffer) => {
      try {
        reader.push(d);
      } catch (err) {
        fail((err as Error).message);
      }
    });
    this.sock.on('error', (err: Error) => fail(err.message));
    this.sock.on('close', () => fail('the connection closed'));
  }

  async sendUp(f: OutFrame): Promise<void> {
    await this.mailbox.until(this.ready);
    await this.mailbox.until(writeFrame(this.sock, f, `the data plane link to ${this.address}`));
  }

  close(): void {
    this.closed = true;
    this.sock.end();
    setTimeout(() => this.sock.destroy(), 2000).unref();
  }
}
