// The session thread: owns every ONNX Runtime session of the process and the tensors shared with them
// (frozen weights). onnxruntime-node runs a session synchronously, so running it here keeps the main
// thread's event loop free to move peer frames while a graph computes. Messages: session-host.ts.
import { parentPort } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import type { HostTensor, TypedData } from './dtype.ts';
import { outputTransfers, type ThreadReply, type ThreadRequest, type WireFeed } from './session-protocol.ts';

const sessions = new Map<number, ort.InferenceSession>();
/** Tensors moved here once (`share`) and fed by reference on every run. */
const shared = new Map<number, ort.Tensor>();

function ortTensor(f: WireFeed, name: string): ort.Tensor {
  if ('ref' in f) {
    const t = shared.get(f.ref);
    if (!t) throw new Error(`graph input '${name}' refers to a shared tensor that was released`);
    return t;
  }
  return new ort.Tensor(f.dtype as ort.Tensor.Type, f.data as ort.Tensor.DataType, f.shape);
}

function sessionOf(id: number): ort.InferenceSession {
  const s = sessions.get(id);
  if (!s) throw new Error(`session ${id} was released`);
  return s;
}

async function handle(m: ThreadRequest): Promise<{ reply: ThreadReply; transfer: ArrayBuffer[] }> {
  switch (m.t) {
    case 'create': {
      const s = await ort.InferenceSession.create(m.bytes, { ...m.options, externalData: m.externalData });
      sessions.set(m.session, s);
      return { reply: { id: m.id, inputNames: [...s.inputNames], outputNames: [...s.outputNames] }, transfer: [] };
    }
    case 'run': {
      const s = sessionOf(m.session);
      const feeds: Record<string, ort.Tensor> = {};
      const spent: ArrayBuffer[] = [];
      for (const [name, f] of Object.entries(m.feeds)) {
        feeds[name] = ortTensor(f, name);
        if ('data' in f) spent.push(f.data.buffer as ArrayBuffer);
      }
      const results = await s.run(feeds);
      const outputs: Record<string, HostTensor> = {};
      for (const name of s.outputNames) {
        const r = results[name];
        outputs[name] = { dtype: r.type as HostTensor['dtype'], shape: [...r.dims], data: r.data as TypedData };
      }
      // The feed buffers go back for the next run's feeds (session-host.ts pools them).
      const moved = outputTransfers(outputs);
      const back = spent.filter((b) => !moved.includes(b));
      return { reply: { id: m.id, outputs, spent: back }, transfer: [...moved, ...back] };
    }
    case 'release': {
      const s = sessions.get(m.session);
      sessions.delete(m.session);
      await s?.release();
      return { reply: { id: m.id, done: true }, transfer: [] };
    }
    case 'share':
      shared.set(m.ref, new ort.Tensor(m.tensor.dtype as ort.Tensor.Type, m.tensor.data as ort.Tensor.DataType, m.tensor.shape));
      return { reply: { id: m.id, done: true }, transfer: [] };
    case 'unshare':
      shared.delete(m.ref);
      return { reply: { id: m.id, done: true }, transfer: [] };
    case 'stop':
      for (const s of sessions.values()) await s.release();
      sessions.clear();
      shared.clear();
      // Ends this thread only; no native run is in flight here (runs are synchronous in this thread).
      setImmediate(() => process.exit(0));
      return { reply: { id: m.id, done: true }, transfer: [] };
  }
}

const port = parentPort;
if (!port) throw new Error('session-thread.ts runs as a worker thread (model/graph/session-host.ts starts it)');
port.on('message', (m: ThreadRequest) => {
  handle(m).then(
    ({ reply, transfer }) => port.postMessage(reply, transfer),
    (err: unknown) => {
      const e = err instanceof Error ? err : new Error(String(err));
      port.postMessage({ id: m.id, error: { name: e.name, message: e.message } } satisfies ThreadReply);
    },
  );
});
