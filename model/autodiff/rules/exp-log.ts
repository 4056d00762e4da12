// Exp and Log.
import type { GradRule } from '../rule.ts';

export const expRule: GradRule = {
  ops: ['Exp'],
  grad: ({ g, node, dy }) => [g.op('Mul', [dy[0]!, node.outputs[0]])],
};

export const logRule: GradRule = {
  ops: ['Log'],
  grad: ({ g, node, dy }) => [g.op('Div', [dy[0]!, node.inputs[0]])],
};
