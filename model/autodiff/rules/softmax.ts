// Softmax and LogSoftmax along one axis, in standard ops (the inference build has no SoftmaxGrad).
import type { GradRule } from '../rule.ts';

export const softmaxRule: GradRule = {
  ops: ['Softmax'],
  grad: ({ g, node, dy }) => {
    const y = node.outputs[0];
    const axis = (node.attrs.axis as number | undefined) ?? -1;
    const d = dy[0]!;
    const dot = g.op('ReduceSum', [g.op('Mul', [d, y]), g.i64([axis])], { keepdims: 1 });
    return [g.op('Mul', [y, g.op('Sub', [d, dot])])];
  },
};

export const logSoftmaxRule: GradRule = {
  ops: ['LogSoftmax'],
  grad: ({ g, node, dy }) => {
    const y = node.outputs[0];
    const axis = (node.attrs.axis as number | undefined) ?? -1;
    const d = dy[0]!;
    const total = g.op('ReduceSum', [d, g.i64([axis])], { keepdims: 1 });
    return [g.op('Sub', [d, g.op('Mul', [g.op('Exp', [y]), total])])];
  },
};
