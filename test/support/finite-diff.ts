// Checks a graph's autodiff gradients against central finite differences, in float64, with ONNX
// Runtime computing both sides.
import assert from 'node:assert/strict';
import { backward } from '../../model/autodiff/backward.ts';
import type { DType, TypedData } from '../../model/graph/dtype.ts';
import { Graph, type Dim } from '../../model/graph/graph.ts';
import { CompiledGraph } from '../../model/graph/session.ts';
import { type HostTensor } from '../../model/graph/dtype.ts';
import { Rng } from '../../common/rng.ts';

export interface FdInput {
  name: string;
  shape: number[];
  /** Declared shape (symbols allowed); defaults to `shape`. */
  decl?: Dim[];
  dtype?: DType;
  /** Explicit values; random normal (or `positive`) float64 otherwise. */
  data?: TypedData;
  positive?: boolean;
  /** Differentiate with respect to this input (default: floats yes). */
  grad?: boolean;
}

export interface FdCase {
  name: string;
  inputs: FdInput[];
  build: (g: Graph, x: Record<string, string>) => string;
  eps?: number;
  tol?: number;
}

const MAX_PROBES = 16;
// Fused float32-only kernels (e.g. QuickGelu for x·sigmoid x) would reject float64 graphs. In-thread:
// these many tiny sessions keep the calling-thread path of CompiledGraph exercised.
const BASIC = { optimization: 'basic', thread: false } as const;

export async function checkGradients(c: FdCase, seed = 1): Promise<{ maxErr: number; checked: number }> {
  const rng = new Rng(seed);
  const g = new Graph(c.name);
  const names: Record<string, string> = {};
  const feeds: Record<string, HostTensor> = {};
  for (const inp of c.inputs) {
    const dtype = inp.dtype ?? 'float64';
    names[inp.name] = g.input(inp.name, dtype, inp.decl ?? inp.shape);
    const size = inp.shape.reduce((a, b) => a * b, 1);
    const data = inp.data ?? Float64Array.from({ length: size }, () => (inp.positive ? 0.5 + rng.nextFloat() : rng.nextGaussian()));
    feeds[inp.name] = { dtype, shape: inp.shape, data };
  }
  const y = c.build(g, names);
  // Project the output on a random direction so every output element contributes to the loss.
  const forward = await CompiledGraph.create(probeShape(g, y), BASIC);
  const yShape = (await forward.run(feeds))[y].shape;
  const dir = Float64Array.from({ length: yShape.reduce((a, b) => a * b, 1) }, () => rng.nextGaussian());
  const rDir = g.initializer('fd_direction', g.info(y).dtype, yShape, g.info(y).dtype === 'float64' ? dir : Float32Array.from(dir));
  const loss = g.op('ReduceSum', [g.op('Mul', [y, rDir])], { keepdims: 0 });
  const lossName = g.rename(g.info(loss).dtype === 'float64' ? loss : g.op('Cast', [loss], { to: 11 }), 'fd_loss');
  const lossGraph = g.clone();
  lossGraph.output(lossName);

  const wrt = c.inputs.filter((i) => i.grad ?? (i.dtype ?? 'float64').startsWith('float')).map((i) => i.name);
  const gb = g.clone();
  const grads = backward(gb, [{ value: loss, grad: gb.scalarLike(1, loss) }], wrt);
  for (const w of wrt) {
    const d = grads.get(w);
    assert.ok(d, `${c.name}: no gradient built for ${w}`);
    gb.output(gb.rename(d, `grad_${w}`));
  }
  const lossSession = await CompiledGraph.create(lossGraph, BASIC);
  const gradSession = await CompiledGraph.create(gb, BASIC);
  const analytic = await gradSession.run(feeds);
  const evalLoss = async () => Number((await lossSession.run(feeds))[lossName].data[0]);

  const eps = c.eps ?? 1e-6;
  let maxErr = 0;
  let checked = 0;
  for (const w of wrt) {
    const data = feeds[w].data as Float64Array | Float32Array;
    const a = analytic[`grad_${w}`];
    assert.deepEqual(a.shape, feeds[w].shape, `${c.name}: gradient of ${w} has the wrong shape`);
    const probes = data.length <= MAX_PROBES ? [...data.keys()] : Array.from({ length: MAX_PROBES }, () => Math.floor(rng.nextFloat() * data.length));
    let scale = 0;
    for (const v of a.data as Float64Array) scale = Math.max(scale, Math.abs(v));
    for (const k of probes) {
      const orig = data[k];
      data[k] = orig + eps;
      const up = await evalLoss();
      data[k] = orig - eps;
      const down = await evalLoss();
      data[k] = orig;
      const numeric = (up - down) / (2 * eps);
      const err = Math.abs(Number(a.data[k]) - numeric) / (1 + scale);
      maxErr = Math.max(maxErr, err);
      checked++;
      assert.ok(err <= (c.tol ?? 1e-6), `${c.name}: d/d${w}[${k}] autodiff ${a.data[k]} vs finite difference ${numeric}`);
    }
  }
  await Promise.all([forward.release(), lossSession.release(), gradSession.release()]);
  return { maxErr, checked };
}

function probeShape(g: Graph, y: string): Graph {
  const p = g.clone();
  p.output(y);
  return p;
}
