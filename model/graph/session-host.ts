// The main thread's side of the session thread: starts it on first use, sends it requests and settles
// their promises. The thread is unref'd while idle, so it never keeps the process alive, and it dies
// with the process. Graph inputs are moved (copied once into a buffer the thread then owns); outputs
// come back by transfer, without a copy; tensors shared with `share` cross once and are fed by reference.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type ort from 'onnxruntime-node';
import type { HostTensor, TypedData } from './dtype.ts';
import { movable, type ThreadReply, type ThreadRequest, type WireFeed } from './session-protocol.ts';
// The thread's entry is loaded by URL; this keeps it in the program, so `npm pack` compiles it to dist/.
import type {} from './session-thread.ts';

type Pending = { resolve: (r: ThreadReply) => void; reject: (e: Error) => void };
type Body = ThreadRequest extends infer R ? (R extends ThreadRequest ? Omit<R, 'id'> : never) : never;

function threadEntry(): URL {
  const fromSources = fs.existsSync(fileURLToPath(new URL('./session-thread.ts', import.meta.url)));
  return new URL(fromSources ? './session-thread.mjs' : './session-thread.js', import.meta.url);
}

/** An error raised in the session thread, rethrown here with the same name and message. */
function rebuilt(e: { name: string; message: string }): Error {
  const err = new Error(e.message);
  err.name = e.name;
  return err;
}

class SessionThread {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  private start(): Worker {
    const w = new Worker(threadEntry());
    w.unref();
    w.on('message', (r: ThreadReply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (this.pending.size === 0) w.unref();
      if ('error' in r) p.reject(rebuilt(r.error));
      else p.resolve(r);
    });
    const fail = (err: Error) => {
      // A thread that stop() ended leaves no callers behind, and may already have a successor.
      if (this.worker !== w) return;
      this.worker = null;
      for (const p of this.pending.values()) p.reject(new Error(`the ONNX Runtime session thread stopped: ${err.message}; its sessions are gone, create them again`));
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    return w;
  }

  request(body: Body, transfer: ArrayBuffer[] = []): Promise<ThreadReply> {
    const w = (this.worker ??= this.start());
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (this.pending.size === 0) w.ref();
      this.pending.set(id, { resolve, reject });
      w.postMessage({ ...body, id }, transfer);
    });
  }

  get running(): boolean {
    return this.worker !== null;
  }

  /** Ends the thread (tests, tools that want a clean exit without waiting for process end). */
  async stop(): Promise<void> {
    const w = this.worker;
    if (!w) return;
    this.worker = null;
    // Terminating the thread while a native run is in flight aborts the whole process (Napi::Error at
    // teardown): the thread ends itself once its run has returned, and the runs in flight fail then.
    const orphans = [...this.pending.values()];
    this.pending.clear();
    const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
    w.postMessage({ t: 'stop', id: 0 } satisfies ThreadRequest);
    await exited;
    for (const p of orphans) p.reject(new Error('the ONNX Runtime session thread stopped: stopSessionThread() was called; its sessions are gone, create them again'));
  }
}

const thread = new SessionThread();
let nextSession = 1;
let nextRef = 1;
/** Tensors whose data lives in the session thread, by the (now empty) typed array the caller keeps. */
const refs = new WeakMap<TypedData, number>();
const dropRef = new FinalizationRegistry<number>((ref) => dropShared(ref));

function dropShared(ref: number): void {
  if (thread.running) void thread.request({ t: 'unshare', ref }).catch(() => undefined);
}

/** A session in the thread, with the names ONNX Runtime reports for it. */
export async function createThreadSession(bytes: Uint8Array, externalData: { path: string; data: Uint8Array }[], options: ort.InferenceSession.SessionOptions) {
  const session = nextSession++;
  // The model bytes are ours (fresh from serialize) and move; external data are views of the graph's
  // initializers, which other graphs may share (quantized weights), so they cross as copies.
  const b = movable(bytes);
  const ext = externalData.map((e) => ({ path: e.path, data: e.data.slice() }));
  const transfer = [b.buffer as ArrayBuffer, ...ext.map((e) => e.data.buffer as ArrayBuffer)];
  const r = (await thread.request({ t: 'create', session, bytes: b, externalData: ext, options }, transfer)) as { inputNames: string[]; outputNames: string[] };
  return { session, inputNames: r.inputNames, outputNames: r.outputNames };
}

/**
 * Buffers that carried feeds to the thread and came back with the results, by byte size: the next
 * run copies its feeds into them instead of allocating (allocation, zeroing, page faults and the
 * collector cost more than the copy). Runs of a rank are sequential, so one set of feed-sized buffers
 * serves every session; bounded so a burst of odd sizes cannot pin memory.
 */
const pool = new Map<number, ArrayBuffer[]>();
const POOL_MAX_BYTES = 4 * 2 ** 30;
let pooledBytes = 0;

function feedBuffer(bytes: number): ArrayBuffer {
  const b = pool.get(bytes)?.pop();
  if (!b) return new ArrayBuffer(bytes);
  pooledBytes -= bytes;
  return b;
}

function giveBack(b: ArrayBuffer): void {
  if (b.byteLength === 0 || pooledBytes + b.byteLength > POOL_MAX_BYTES) return;
  const list = pool.get(b.byteLength) ?? [];
  list.push(b);
  pool.set(b.byteLength, list);
  pooledBytes += b.byteLength;
}

export async function runThreadSession(session: number, feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>> {
  const wire: Record<string, WireFeed> = {};
  const transfer: ArrayBuffer[] = [];
  for (const [name, t] of Object.entries(feeds)) {
    const ref = refs.get(t.data);
    if (ref !== undefined) {
      wire[name] = { dtype: t.dtype, shape: t.shape, ref };
      continue;
    }
    // The caller keeps its tensor (activations are reused by the backward, weights by the optimizer):
    // one copy into a buffer the thread owns for the run and sends back.
    const buffer = feedBuffer(t.data.byteLength);
    const data = new (t.data.constructor as new (b: ArrayBuffer) => TypedData)(buffer);
    data.set(t.data as never);
    wire[name] = { dtype: t.dtype, shape: t.shape, data };
    transfer.push(buffer);
  }
  const r = (await thread.request({ t: 'run', session, feeds: wire }, transfer)) as { outputs: Record<string, HostTensor>; spent: ArrayBuffer[] };
  r.spent.forEach(giveBack);
  return r.outputs;
}

export async function releaseThreadSession(session: number): Promise<void> {
  await thread.request({ t: 'release', session });
}

/** Whether `data` was moved to the session thread by `shareWithThread`. */
export function isSharedWithThread(data: TypedData): boolean {
  return refs.has(data);
}

/**
 * Moves a tensor into the session thread for good: every thread session fed this tensor's `data`
 * object reads the thread's copy, and no run copies it. The returned tensor's data is empty in this
 * thread (its buffer was transferred); keep it only as the key. When it is garbage-collected, or on
 * `unshareWithThread`, the thread lets go of its buffer.
 */
export function shareWithThread(t: HostTensor): HostTensor {
  if (refs.has(t.data)) return t;
  const data = movable(t.data);
  const ref = nextRef++;
  void thread.request({ t: 'share', ref, tensor: { dtype: t.dtype, shape: t.shape, data } }, [data.buffer as ArrayBuffer]).catch(() => undefined);
  refs.set(data, ref);
  dropRef.register(data, ref, data);
  return { dtype: t.dtype, shape: t.shape, data };
}

export function unshareWithThread(data: TypedData): void {
  const ref = refs.get(data);
  if (ref === undefined) return;
  refs.delete(data);
  dropRef.unregister(data);
  dropShared(ref);
}

export function stopSessionThread(): Promise<void> {
  return thread.stop();
}
