// Runs builder graphs in onnxruntime-node. Feeds are filtered to what the session declares because
// dead-code elimination may drop inputs a particular graph does not need.
import ort from 'onnxruntime-node';
import type { DType, HostTensor, TypedData } from './dtype.ts';
import type { Graph } from './graph.ts';
import { serialize } from './serialize.ts';

export type Device = 'cpu' | 'cuda';

export interface SessionOptions {
  device?: Device;
  threads?: number;
  /** 'all' in production; tests of float64 rules use 'basic' because some fused kernels are float32-only. */
  optimization?: 'basic' | 'extended' | 'all';
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

export class CompiledGraph {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
  ) {}

  static async create(g: Graph, opts: SessionOptions = {}): Promise<CompiledGraph> {
    const { bytes, externalData } = serialize(g);
    const session = await ort.InferenceSession.create(bytes, { ...ortSessionOptions(opts), externalData });
    return new CompiledGraph(session, session.inputNames, session.outputNames);
  }

  async run(feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const name of this.inputNames) {
      const t = feeds[name];
      if (!t) throw new Error(`graph input '${name}' was not fed`);
      ortFeeds[name] = new ort.Tensor(t.dtype as ort.Tensor.Type, t.data as ort.Tensor.DataType, t.shape);
    }
    const results = await this.session.run(ortFeeds);
    const out: Record<string, HostTensor> = {};
    for (const name of this.outputNames) {
      const r = results[name];
      out[name] = { dtype: r.type as DType, shape: [...r.dims], data: r.data as TypedData };
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
