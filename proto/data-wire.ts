// The data plane's wire: one byte stream per neighbour pair (TLS with the job's certificates, or TCP
// with --insecure) that carries tensor frames without grpc-js's per-message buffers. A stream is a
// sequence of records, [type: u8][length: u32 LE][payload]:
//   HELLO    client → server, first: UTF-8 JSON { authorization: "Bearer <token>", from: worker id }
//   WELCOME  server → client: the hello was accepted; frames may follow either way
//   REFUSED  either way, then the stream closes: UTF-8, why
//   FRAME    the Frame message (proto/propipe.proto) with its tensor and teacher bytes left out; those
//            follow the record raw, tensor then teacher, as many bytes as shape × dtype say.
// The sender writes views of its tensors (no copy); the receiver checks the header before it allocates
// and copies the socket's chunks straight into one buffer of the announced size.
import { constants } from 'node:buffer';
import type * as grpc from '@grpc/grpc-js';
import { checkFrameHead, completeFrame, DEFAULT_CHUNK_BYTES, encodeFrames, FrameError, MAX_CHUNKS, tensorBytes, type FrameRule, type InFrame, type OutFrame } from './frames.ts';
import { loadProto, MAX_MESSAGE_BYTES } from './load.ts';
import type { FrameMsg, TensorMsg } from './messages.ts';

export const RECORD = { HELLO: 1, WELCOME: 2, REFUSED: 3, FRAME: 4 } as const;
const PREFIX = 5;
/** Records before the hello is accepted (the hello, a refusal) are small: nothing larger is buffered for an unknown peer. */
const MAX_UNAUTHENTICATED_RECORD = 64 * 1024;
const EMPTY = Buffer.alloc(0);

export interface DataPlaneLimits {
  /** A record's payload (the frame header with labels and position ids): PROPIPE_MAX_MESSAGE_MB, as for gRPC. */
  maxHeaderBytes: number;
  /** One tensor's bytes. gRPC frames reach at most 4096 chunks of 1 MiB by default: the same 4 GiB here. */
  maxTensorBytes: number;
}

export function dataPlaneLimits(env: NodeJS.ProcessEnv = process.env): DataPlaneLimits {
  const mb = env.PROPIPE_MAX_TENSOR_MB ? Number(env.PROPIPE_MAX_TENSOR_MB) : NaN;
  const tensor = Number.isFinite(mb) && mb > 0 ? Math.round(mb * 1024 * 1024) : MAX_CHUNKS * DEFAULT_CHUNK_BYTES;
  return { maxHeaderBytes: MAX_MESSAGE_BYTES, maxTensorBytes: Math.min(tensor, constants.MAX_LENGTH) };
}

/** The Frame codec gRPC uses (same options, same message), for the header alone. */
function codec(): grpc.MethodDefinition<FrameMsg, FrameMsg> {
  return loadProto().Peer.service.Exchange as grpc.MethodDefinition<FrameMsg, FrameMsg>;
}

/** A control record (HELLO, WELCOME, REFUSED) or a frame header, prefix included. */
export function record(type: number, payload: Buffer | string = EMPTY): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const out = Buffer.allocUnsafe(PREFIX + body.length);
  out.writeUInt8(type, 0);
  out.writeUInt32LE(body.length, 1);
  body.copy(out, PREFIX);
  return out;
}

/** A frame as the buffers to write: the header record, then views of the tensor and teacher bytes. */
export function frameRecord(f: OutFrame): Buffer[] {
  // One "chunk" of the whole tensor: encodeFrames checks the teacher and makes views, not copies.
  const [m] = encodeFrames(f, Number.MAX_SAFE_INTEGER);
  const strip = (t: TensorMsg | null) => t && { dtype: t.dtype, shape: t.shape, data: EMPTY };
  const head = record(RECORD.FRAME, codec().requestSerialize({ ...m, tensor: strip(m.tensor), teacher: strip(m.teacher) }));
  return m.teacher ? [head, m.tensor!.data, m.teacher.data] : [head, m.tensor!.data];
}

export interface RecordHandlers {
  /** HELLO, WELCOME or REFUSED; throw to end the stream. */
  control(type: number, payload: Buffer): void;
  frame(f: InFrame): void;
  /**
   * A well-formed frame this rank does not take (its rule says why): throw to end the stream, or
   * return to skip its bytes.
   */
  refused(why: string, key: string): void;
}

interface Body {
  head: FrameMsg & { tensor: TensorMsg };
  key: string;
  /** null while skipping a refused frame's bytes. */
  tensor: Buffer | null;
  teacher: Buffer | null;
  /** Bytes still to come: tensor, then teacher. */
  left: number;
  total: number;
}

/**
 * Parses a record stream pushed chunk by chunk. Frames are refused until `framesAllowed` (set once the
 * hello is accepted); every header is checked, against the limits and the rank's rule, before anything
 * is allocated for it. Throws FrameError on anything malformed: the stream cannot be resynchronised.
 */
export class RecordReader {
  framesAllowed = false;
  private readonly prefix = Buffer.alloc(PREFIX);
  private prefixFilled = 0;
  private payload: { type: number; buf: Buffer; filled: number } | null = null;
  private body: Body | null = null;

  constructor(
    private readonly on: RecordHandlers,
    private readonly rule: () => FrameRule,
    private readonly limits: DataPlaneLimits = dataPlaneLimits(),
  ) {}

  push(chunk: Buffer): void {
    let o = 0;
    while (o < chunk.length) {
      if (this.body) o = this.fill(chunk, o);
      else if (this.payload) {
        const p = this.payload;
        const n = chunk.copy(p.buf, p.filled, o, Math.min(chunk.length, o + p.buf.length - p.filled));
        p.filled += n;
        o += n;
        if (p.filled === p.buf.length) {
          this.payload = null;
          this.dispatch(p.type, p.buf);
        }
      } else {
        const n = chunk.copy(this.prefix, this.prefixFilled, o, Math.min(chunk.length, o + PREFIX - this.prefixFilled));
        this.prefixFilled += n;
        o += n;
        if (this.prefixFilled < PREFIX) continue;
        this.prefixFilled = 0;
        const type = this.prefix.readUInt8(0);
        const length = this.prefix.readUInt32LE(1);
        if (type < RECORD.HELLO || type > RECORD.FRAME) throw new FrameError(`data plane: record type ${type} is not one of hello, welcome, refused, frame (is the other end a propipe data plane of the same version?)`);
        if (!this.framesAllowed && length > MAX_UNAUTHENTICATED_RECORD) throw new FrameError(`data plane: a record of ${length} bytes before the hello was accepted (at most ${MAX_UNAUTHENTICATED_RECORD})`);
        if (length > this.limits.maxHeaderBytes) throw new FrameError(`data plane: a record of ${length} bytes is above PROPIPE_MAX_MESSAGE_MB (${this.limits.maxHeaderBytes} bytes)`);
        if (length === 0) this.dispatch(type, EMPTY);
        else this.payload = { type, buf: Buffer.allocUnsafe(length), filled: 0 };
      }
    }
  }

  /** Copies the frame's raw bytes into place (or past them, when skipping); returns the new offset. */
  private fill(chunk: Buffer, o: number): number {
    const b = this.body!;
    const n = Math.min(chunk.length - o, b.left);
    const half = b.total / (b.teacher ? 2 : 1);
    let at = b.total - b.left;
    let from = o;
    while (from < o + n) {
      // The teacher's bytes follow the tensor's: a chunk may straddle the two.
      const target = at < half ? b.tensor : b.teacher;
      const offset = at < half ? at : at - half;
      const take = Math.min(o + n - from, half - offset);
      if (target) chunk.copy(target, offset, from, from + take);
      from += take;
      at += take;
    }
    b.left -= n;
    if (b.left === 0) {
      this.body = null;
      if (b.tensor) this.on.frame(completeFrame(b.head, b.tensor, b.teacher, b.key));
    }
    return o + n;
  }

  private dispatch(type: number, payload: Buffer): void {
    if (type !== RECORD.FRAME) return this.on.control(type, payload);
    if (!this.framesAllowed) throw new FrameError('data plane: a frame arrived before the hello was accepted');
    let msg: FrameMsg;
    try {
      msg = codec().requestDeserialize(payload);
    } catch (err) {
      throw new FrameError(`data plane: a frame header is not a Frame message (${(err as Error).message})`);
    }
    const { key, m } = checkFrameHead(msg, () => null);
    if (m.chunks !== 1) throw new FrameError(`${key}: data plane frames are whole, but this one says chunk ${m.chunk} of ${m.chunks}`);
    if (m.tensor.data.length !== 0 || (m.teacher?.data.length ?? 0) !== 0) throw new FrameError(`${key}: tensor bytes inside the header (they follow it raw on the data plane)`);
    const bytes = tensorBytes(m.tensor, `${key} tensor`);
    if (bytes > this.limits.maxTensorBytes) {
      throw new FrameError(`${key} tensor: shape [${m.tensor.shape}] ${m.tensor.dtype} is ${bytes} bytes, above the data plane's limit of ${this.limits.maxTensorBytes} bytes (PROPIPE_MAX_TENSOR_MB): raise it on the receiving worker if activations of this size are meant`);
    }
    const teacher = !!m.teacher;
    if (m.teacher && (m.teacher.dtype !== m.tensor.dtype || m.teacher.shape.join() !== m.tensor.shape.join())) {
      throw new FrameError(`${key}: the teacher's hidden state (${m.teacher.dtype} [${m.teacher.shape}]) must match the tensor (${m.tensor.dtype} [${m.tensor.shape}])`);
    }
    const total = bytes * (teacher ? 2 : 1);
    const why = this.rule()(m.kind, m.step, m.microBatch, m.epoch ?? 0);
    if (why) {
      this.on.refused(why, key);
      this.body = { head: m, key, tensor: null, teacher: null, left: total, total };
      return;
    }
    this.body = { head: m, key, tensor: Buffer.allocUnsafeSlow(bytes), teacher: teacher ? Buffer.allocUnsafeSlow(bytes) : null, left: total, total };
  }
}
