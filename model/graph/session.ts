// Runs builder graphs in onnxruntime-node. Feeds are filtered to what the session declares because
// dead-code elimination may drop inputs a particular graph does not need.
import ort from 'onnxruntime-node';
import type { DType, HostTensor, TypedData } from './dtype.ts';
import type { Graph } from './graph.ts';
import { serialize } from './serialize.ts';
import { createThreadSession, isSharedWithThread, releaseThreadSession, runThreadSession, shareWithThread, unshareWithThread } from './session-host.ts';

export type Device = 'cpu' | 'cuda';

export interface SessionOptions {
  device?: Device;
  threads?: number;
  /** 'all' in production; tests of float64 rules use 'basic' because some fused kernels are float32-only. */
  optimization?: 'basic' | 'extended' | 'all';
  /**
   * Run in the process's session thread (PROPIPE_SESSION_THREAD=1 makes it the process's default) so that
   * the event loop stays free while a graph computes, or on the calling thread (the default: measured
   * faster on shared CPU cores; README "Sessions off the main thread").
   */
  thread?: boolean;
}

/** Whether sessions run in the session thread unless a session says otherwise. */
export function sessionThreadDefault(): boolean {
  return process.env.PROPIPE_SESSION_THREAD === '1';
}

export function hostTensor(dtype: DType, shape: number[], data: TypedData): HostTensor {
  return { dtype, shape, data };
}

/** The ONNX Runtime options every propipe session uses (benchmarks add profiling on top). */
export function ortSessionOptions(opts: SessionOptions = {}): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: opts.device === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
    graphOptimizationLevel: opts.optimization ?? 'all',
    intraOpNumThreads: opts.threads ?? 0,
    interOpNumThreads: 1,
    logSeverityLevel: 3,
    // The memory pattern ONNX Runtime records on the first run is allocated beside the arena chunks of
    // that run, doubling a training graph's activations from the second step on (LLaMA Pro on the
    // 16-layer model of bench/memory.ts: 2.28 GB peak with it, 1.93 GB without, same step time).
    enableMemPattern: false,
    // Each session has its own thread pool; spinning pools of idle sessions (the forward graph while
    // the backward runs) steal the cores from the running one. Measured in bench/block-throughput.ts.
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
}

/**
 * A tensor every session of the process reads (frozen weights): with the session thread it moves there
 * once, and runs feed it by reference (the returned tensor's data is then an empty key, not values).
 */
export function shareWithSessions(t: HostTensor): HostTensor {
  return sessionThreadDefault() ? shareWithThread(t) : t;
}

/** Lets the session thread drop a tensor of `shareWithSessions` (no effect without the thread). */
export function unshareWithSessions(t: HostTensor): void {
  unshareWithThread(t.data);
}

/** Where a compiled graph runs: an ONNX Runtime session on this thread, or one in the session thread. */
interface Runner {
  run(feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>>;
  release(): Promise<void>;
}

class InThread implements Runner {
  constructor(private readonly session: ort.InferenceSession) {}

  async run(feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) {
      if (isSharedWithThread(t.data)) throw new Error(`graph input '${name}' was moved to the session thread; run this graph there (SessionOptions.thread, PROPIPE_SESSION_THREAD)`);
      ortFeeds[name] = new ort.Tensor(t.dtype as ort.Tensor.Type, t.data as ort.Tensor.DataType, t.shape);
    }
    const results = await this.session.run(ortFeeds);
    const out: Record<string, HostTensor> = {};
    for (const name of this.session.outputNames) {
      const r = results[name];
      out[name] = { dtype: r.type as DType, shape: [...r.dims], data: r.data as TypedData };
    }
    return out;
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

export class CompiledGraph {
  private constructor(
    private readonly runner: Runner,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
  ) {}

  static async create(g: Graph, opts: SessionOptions = {}): Promise<CompiledGraph> {
    const { bytes, externalData } = serialize(g);
    const options = ortSessionOptions(opts);
    if (opts.thread ?? sessionThreadDefault()) {
      const s = await createThreadSession(bytes, externalData, options);
      const runner: Runner = { run: (feeds) => runThreadSession(s.session, feeds), release: () => releaseThreadSession(s.session) };
      return new CompiledGraph(runner, s.inputNames, s.outputNames);
    }
    const session = await ort.InferenceSession.create(bytes, { ...options, externalData });
    return new CompiledGraph(new InThread(session), session.inputNames, session.outputNames);
  }

  async run(feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>> {
    const declared: Record<string, HostTensor> = {};
    for (const name of this.inputNames) {
      const t = feeds[name];
      if (!t) throw new Error(`graph input '${name}' was not fed`);
      if (t.data.length === 0 && t.shape.every((d) => d > 0) && !isSharedWithThread(t.data)) {
        throw new Error(`graph input '${name}' has no values: its buffer was moved to the session thread and released since (shareWithSessions / unshareWithSessions)`);
      }
      declared[name] = t;
    }
    return this.runner.run(declared);
  }

  release(): Promise<void> {
    return this.runner.release();
  }
}
