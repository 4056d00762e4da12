// Sigmoid (SiLU is built as x·sigmoid(x)) and Tanh, both from their forward outputs.
import type { GradRule } from '../rule.ts';

export const sigmoidRule: GradRule = {
  ops: ['Sigmoid'],
  grad: ({ g, node, dy }) => {
    const y = node.outputs[0];
    const oneMinus = g.op('Sub', [g.scalarLike(1, y), y]);
    return [g.op('Mul', [dy[0]!, g.op('Mul', [y, oneMinus])])];
  },
};

export const tanhRule: GradRule = {
  ops: ['Tanh'],
  grad: ({ g, node, dy }) => {
    const y = node.outputs[0];
    return [g.op('Mul', [dy[0]!, g.op('Sub', [g.scalarLike(1, y), g.op('Mul', [y, y])])])];
  },
};
