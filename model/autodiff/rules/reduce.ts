// ReduceSum, ReduceMean, ReduceMax: the gradient is broadcast back over the reduced axes.
import { ONNX_DTYPE } from '../../graph/dtype.ts';
import type { Graph, Node } from '../../graph/graph.ts';
import type { GradRule } from '../rule.ts';
import { normAxes } from '../util.ts';

function reducedAxes(g: Graph, node: Node): number[] {
  const r = g.info(node.inputs[0]).shape.length;
  const axes = node.inputs[1] ? g.constValue(node.inputs[1])! : Array.from({ length: r }, (_, i) => i);
  return normAxes(axes, r);
}

/** dy with the reduced axes restored as size 1, then expanded to x's shape. */
function spread(g: Graph, node: Node, dy: string): string {
  const x = node.inputs[0];
  const keep = ((node.attrs.keepdims as number | undefined) ?? 1) === 1;
  const d = keep ? dy : g.op('Unsqueeze', [dy, g.i64(reducedAxes(g, node))]);
  return g.op('Expand', [d, g.op('Shape', [x])]);
}

/** Number of elements each output element was reduced from, as a scalar of x's dtype. */
function reducedCount(g: Graph, node: Node): string {
  const x = node.inputs[0];
  const { dtype, shape } = g.info(x);
  const axes = reducedAxes(g, node);
  const dims = axes.map((a) => shape[a]);
  if (dims.every((d) => typeof d === 'number')) {
    return g.constant((dims as number[]).reduce((p, v) => p * v, 1), dtype);
  }
  const picked = g.op('Gather', [g.op('Shape', [x]), g.i64(axes)], { axis: 0 });
  return g.op('Cast', [g.op('ReduceProd', [picked], { keepdims: 0 })], { to: ONNX_DTYPE[dtype] });
}

export const reduceSumRule: GradRule = {
  ops: ['ReduceSum'],
  grad: ({ g, node, dy }) => [spread(g, node, dy[0]!)],
};

export const reduceMeanRule: GradRule = {
  ops: ['ReduceMean'],
  grad: ({ g, node, dy }) => [g.op('Div', [spread(g, node, dy[0]!), reducedCount(g, node)])],
};

// Ties share the gradient equally, so the rule is the gradient of a well-defined (sub)derivative.
export const reduceMaxRule: GradRule = {
  ops: ['ReduceMax'],
  grad: ({ g, node, dy }) => {
    const x = node.inputs[0];
    const { dtype } = g.info(x);
    const yFull = spread(g, node, node.outputs[0]);
    const mask = g.op('Cast', [g.op('Equal', [x, yFull])], { to: ONNX_DTYPE[dtype] });
    const ties = g.op('ReduceSum', [mask, g.i64(reducedAxes(g, node))], { keepdims: 1 });
    return [g.op('Mul', [g.op('Div', [mask, ties]), spread(g, node, dy[0]!)])];
  },
};
