// Worker-to-worker transport: each rank hosts a Peer service; the lower rank of a pair opens one
// bidirectional Exchange stream to the upper one. Activations go up on the request side, gradients
// come down on the response side. Every frame is validated on receipt.
import type http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { childLog } from '../common/log.ts';
import { encodeFrames, FrameAssembler, FrameError, type FrameRule, type OutFrame } from '../proto/frames.ts';
import { CHANNEL_OPTIONS, loadProto } from '../proto/load.ts';
import type { FrameMsg } from '../proto/messages.ts';
import { RecoverableError } from '../common/errors.ts';
import { Mailbox } from './mailbox.ts';

const log = childLog({ component: 'peer' });

export type FrameExpectation = FrameRule;

async function writeAll(stream: grpc.ClientDuplexStream<FrameMsg, FrameMsg> | grpc.ServerDuplexStream<FrameMsg, FrameMsg>, frames: FrameMsg[], mailbox: Mailbox): Promise<void> {
  for (const f of frames) {
    if (stream.destroyed) throw new RecoverableError('the peer stream is closed');
    // A peer that died never drains: wait for whichever comes first, or for the step to be dropped.
    if (!stream.write(f)) await mailbox.until(drainOrClose(stream));
  }
}

/**
 * Resolves on 'drain' or 'close', rejects on 'error', and removes all three listeners either way (a
 * race of three `once` promises leaves the two losers attached: one leak per backpressure wait).
 */
function drainOrClose(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve, reject) => {
    const settle = (err?: Error) => {
      stream.off('drain', onDrain);
      stream.off('close', onDrain);
      stream.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => settle();
    const onError = (err: Error) => settle(err);
    stream.on('drain', onDrain);
    stream.on('close', onDrain);
    stream.on('error', onError);
  });
}

/**
 * Channel options of the peer streams: the shared ones plus a 16 MB HTTP/2 flow-control window per
 * stream and per connection. At the protocol default of 64 KB a sender stalls for a WINDOW_UPDATE
 * every 32 KB; the larger window gives 1.4-2x the throughput over loopback at a quarter to a third less
 * CPU per MB on both ends (bench/transfer.ts, variant window-64k). grpc-js applies it on the client
 * side; `PeerServer` applies it to its own HTTP/2 sessions, for which grpc-js has no option.
 */
export const PEER_CHANNEL_OPTIONS: grpc.ChannelOptions = { ...CHANNEL_OPTIONS, 'grpc-node.flow_control_window': 16 * 1024 * 1024 };

/** The Peer service of this rank: receives from the rank below, answers it with gradients. */
export class PeerServer {
  readonly mailbox = new Mailbox();
  private readonly server: grpc.Server;
  /** The stream of the rank below that carried its latest assignment's frames, with that epoch. */
  private below: { epoch: number; call: grpc.ServerDuplexStream<FrameMsg, FrameMsg> } | null = null;
  private belowWaiters: (() => void)[] = [];
  expect: FrameExpectation = () => null;
  chunkBytes: number | undefined;

  constructor(
    private readonly credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure(),
    private readonly authorize?: (metadata: grpc.Metadata) => grpc.ServiceError | null,
    private readonly options: grpc.ChannelOptions = PEER_CHANNEL_OPTIONS,
  ) {
    this.server = new grpc.Server(options);
    const { Peer } = loadProto();
    this.server.addService(Peer.service, {
      Exchange: (call: grpc.ServerDuplexStream<FrameMsg, FrameMsg>) => this.onExchange(call),
      Send: (call: grpc.ServerUnaryCall<FrameMsg, unknown>, cb: grpc.sendUnaryData<unknown>) => this.onSend(call, cb),
    });
  }

  async start(host: string, port: number): Promise<string> {
    const bound = await new Promise<number>((resolve, reject) => this.server.bindAsync(`${host}:${port}`, this.credentials, (err, p) => (err ? reject(err) : resolve(p))));
    this.tuneSessions();
    return `${host}:${bound}`;
  }

  /** Applies the flow-control window of the options to every HTTP/2 session of this server. */
  private tuneSessions(): void {
    const window = this.options['grpc-node.flow_control_window'] as number | undefined;
    if (!window) return;
    // grpc-js keeps its HTTP/2 servers private; without them the default window stays (slower, still correct).
    const servers = (this.server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
    for (const s of servers?.keys() ?? []) {
      s.on('session', (session: http2.ServerHttp2Session) => {
        session.setLocalWindowSize(window);
        session.settings({ initialWindowSize: window });
      });
    }
  }

  private denied(call: { metadata: grpc.Metadata }): grpc.ServiceError | null {
    return this.authorize ? this.authorize(call.metadata) : null;
  }

  private onSend(call: grpc.ServerUnaryCall<FrameMsg, unknown>, cb: grpc.sendUnaryData<unknown>): void {
    const denied = this.denied(call);
    if (denied) return cb(denied);
    try {
      const f = new FrameAssembler(this.rule).push(call.request);
      if (!f) return cb({ code: grpc.status.INVALID_ARGUMENT, details: 'Send takes unchunked frames only' } as grpc.ServiceError);
      this.mailbox.deliver(f);
      cb(null, { step: f.step, microBatch: f.microBatch });
    } catch (err) {
      cb({ code: grpc.status.INVALID_ARGUMENT, details: (err as Error).message } as grpc.ServiceError);
    }
  }

  private onExchange(call: grpc.ServerDuplexStream<FrameMsg, FrameMsg>): void {
    const denied = this.denied(call);
    if (denied) {
      call.emit('error', denied);
      return;
    }
    const assembler = new FrameAssembler(this.rule);
    call.on('data', (m: FrameMsg) => {
      try {
        const f = assembler.push(m);
        if (!f) return;
        // Gradients of an assignment go down the stream that brought its activations.
        if (!this.below || f.epoch >= this.below.epoch) {
          this.below = { epoch: f.epoch, call };
          this.belowWaiters.splice(0).forEach((w) => w());
        }
        this.mailbox.deliver(f);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'rejected a frame from the rank below');
        if (err instanceof FrameError) call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: err.message });
      }
    });
    call.on('end', () => call.end());
    call.on('error', () => undefined);
  }

  /** The current rule, whenever a frame arrives (a stream outlives the assignment it was opened in). */
  private readonly rule: FrameExpectation = (kind, step, mb, epoch) => this.expect(kind, step, mb, epoch);

  /** Sends gradients down to the rank below, on the stream of the frame's assignment. */
  async sendDown(f: OutFrame): Promise<void> {
    const epoch = f.epoch ?? 0;
    // The rank below may not be there yet, or never come (it died, the job is re-assigned): the step's end ends the wait.
    while (this.below?.epoch !== epoch) await this.mailbox.until(new Promise<void>((r) => this.belowWaiters.push(r)));
    await writeAll(this.below.call, encodeFrames(f, this.chunkBytes), this.mailbox);
  }

  async stop(): Promise<void> {
    this.server.forceShutdown();
  }
}

/** The stream from this rank to the rank above. */
export class PeerLink {
  private readonly client: grpc.Client;
  private readonly stream: grpc.ClientDuplexStream<FrameMsg, FrameMsg>;
  chunkBytes: number | undefined;

  constructor(address: string, private readonly mailbox: Mailbox, expect: FrameExpectation, credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(), metadata = new grpc.Metadata(), options: grpc.ChannelOptions = PEER_CHANNEL_OPTIONS) {
    const { Peer } = loadProto();
    this.client = new Peer(address, credentials, options);
    this.stream = (this.client as unknown as { Exchange(md: grpc.Metadata): grpc.ClientDuplexStream<FrameMsg, FrameMsg> }).Exchange(metadata);
    const assembler = new FrameAssembler(expect);
    this.stream.on('data', (m: FrameMsg) => {
      try {
        const f = assembler.push(m);
        if (f) mailbox.deliver(f);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'rejected a frame from the rank above');
      }
    });
    this.stream.on('error', (err: Error) => mailbox.fail(new RecoverableError(`link to ${address} failed: ${err.message}`)));
  }

  async sendUp(f: OutFrame): Promise<void> {
    await writeAll(this.stream, encodeFrames(f, this.chunkBytes), this.mailbox);
  }

  close(): void {
    this.stream.end();
    this.client.close();
  }
}
