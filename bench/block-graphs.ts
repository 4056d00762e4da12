// The block benchmark's graphs, rebuilt exactly as RangeProgram.create builds them, for counting and profiling.
import { backward } from '../model/autodiff/backward.ts';
import { type ModelConfig } from '../model/hf/config.ts';
import { Graph, type Shape } from '../model/graph/graph.ts';
import { liveNodes } from '../model/graph/serialize.ts';
import { ParamBinder } from '../model/llama/params.ts';
import { buildRangeGraph, type BlockRange } from '../model/llama/range-graph.ts';

// ---- the graphs, rebuilt exactly as RangeProgram.create builds them, for counting and profiling ----

export const OUT_GRAD = 'grad.hidden_out';

interface BuiltGraphs {
  forward: Graph;
  backward: Graph | null;
}

export function buildGraphs(config: ModelConfig, range: BlockRange, trainable: ReadonlySet<string>, load: (n: string) => Float32Array): BuiltGraphs {
  const binder = new ParamBinder({ trainable, load });
  const { graph, seed, hiddenIn } = buildRangeGraph(config, range, binder);
  const wrt = [...binder.used.filter((n) => trainable.has(n)), ...(hiddenIn ? [hiddenIn] : [])];
  const gb = graph.clone(`${graph.name}_backward`);
  gb.outputs.splice(0, gb.outputs.length);
  const seedGrad = gb.input(OUT_GRAD, 'float32', ['batch', 'seq', config.hiddenSize]);
  const grads = backward(gb, [{ value: seed, grad: seedGrad }], wrt);
  for (const w of wrt) {
    const d = grads.get(w);
    if (!d) throw new Error(`${w} does not influence the range output`);
    gb.output(gb.rename(d, `grad.${w}`));
  }
  return { forward: graph, backward: gb };
}

/** The same graph with symbolic dims replaced by numbers; shapes are re-inferred node by node. */
export function concretize(g: Graph, dims: Readonly<Record<string, number>>): Graph {
  const c = new Graph(g.name);
  const sub = (s: Shape): Shape => s.map((d) => (typeof d === 'string' && d in dims ? dims[d] : d));
  for (const [name, init] of g.initializers) c.initializer(name, init.dtype, init.dims, init.data);
  for (const name of g.inputs) c.input(name, g.info(name).dtype, sub(g.info(name).shape));
  for (const n of liveNodes(g)) c.emit({ ...n, inputs: [...n.inputs], outputs: [...n.outputs] });
  for (const o of g.outputs) c.output(o);
  return c;
}

function numel(s: Shape, where: string): number {
  let n = 1;
  for (const d of s) {
    if (typeof d !== 'number') throw new Error(`${where}: dim ${String(d)} is not static`);
    n *= d;
  }
  return n;
}

export interface GraphCount {
  matmulFlops: number;
  matmulNodes: number;
  nodes: number;
  /** Live node count per op type, largest first. */
  ops: Record<string, number>;
}

export function countGraph(g: Graph): GraphCount {
  let flops = 0;
  let matmuls = 0;
  const ops = new Map<string, number>();
  const nodes = liveNodes(g);
  for (const n of nodes) {
    ops.set(n.op, (ops.get(n.op) ?? 0) + 1);
    if (n.op !== 'MatMul') continue;
    const a = g.info(n.inputs[0]).shape;
    const k = a[a.length - 1];
    if (typeof k !== 'number') throw new Error(`MatMul ${n.outputs[0]}: inner dim not static`);
    flops += 2 * numel(g.info(n.outputs[0]).shape, `MatMul ${n.outputs[0]}`) * k;
    matmuls++;
  }
  const sorted = [...ops].sort((x, y) => y[1] - x[1]);
  return { matmulFlops: flops, matmulNodes: matmuls, nodes: nodes.length, ops: Object.fromEntries(sorted) };
}
