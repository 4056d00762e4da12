// Messages between the main thread (session-host.ts) and the session thread (session-thread.ts).
import type ort from 'onnxruntime-node';
import type { DType, HostTensor, TypedData } from './dtype.ts';

/** A graph input as it crosses: its data (moved), or a reference to a tensor shared once (`share`). */
export type WireFeed = { dtype: DType; shape: number[]; data: TypedData } | { dtype: DType; shape: number[]; ref: number };

export type ThreadRequest = { id: number } & (
  | { t: 'create'; session: number; bytes: Uint8Array; externalData: { path: string; data: Uint8Array }[]; options: ort.InferenceSession.SessionOptions }
  | { t: 'run'; session: number; feeds: Record<string, WireFeed> }
  | { t: 'release'; session: number }
  | { t: 'share'; ref: number; tensor: HostTensor }
  | { t: 'unshare'; ref: number }
  /** Release every session and end the thread once the run in flight (if any) has returned. */
  | { t: 'stop' }
);

export type ThreadReply = { id: number } & (
  | { error: { name: string; message: string } }
  | { inputNames: string[]; outputNames: string[] }
  | { outputs: Record<string, HostTensor>; spent: ArrayBuffer[] }
  | { done: true }
);

/** True when the view covers its whole buffer, so moving the buffer moves exactly this tensor. */
export function ownsBuffer(d: TypedData | Uint8Array): boolean {
  return d.byteOffset === 0 && d.byteLength === d.buffer.byteLength && d.buffer instanceof ArrayBuffer;
}

/** A view that can be moved to another thread: itself when it owns its buffer, else a copy of just its bytes. */
export function movable<T extends TypedData | Uint8Array>(d: T): T {
  return ownsBuffer(d) ? d : (d.slice() as T);
}

/** The buffers to transfer with `outputs` (ONNX Runtime gives each output a buffer of its own). */
export function outputTransfers(outputs: Record<string, HostTensor>): ArrayBuffer[] {
  const list = new Set<ArrayBuffer>();
  for (const t of Object.values(outputs)) {
    if (!ownsBuffer(t.data) || list.has(t.data.buffer as ArrayBuffer)) t.data = t.data.slice();
    list.add(t.data.buffer as ArrayBuffer);
  }
  return [...list];
}
