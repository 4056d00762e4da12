// Ops that only move elements: Transpose, Reshape-like ops and Expand.
import type { GradRule } from '../rule.ts';
import { unbroadcast } from '../util.ts';

export const transposeRule: GradRule = {
  ops: ['Transpose'],
  grad: ({ g, node, dy }) => {
    const r = g.info(node.inputs[0]).shape.length;
    const perm = (node.attrs.perm as number[] | undefined) ?? Array.from({ length: r }, (_, i) => r - 1 - i);
    const inverse = new Array<number>(r);
    perm.forEach((p, i) => (inverse[p] = i));
    return [g.op('Transpose', [dy[0]!], { perm: inverse })];
  },
};

export const reshapeRule: GradRule = {
  ops: ['Reshape', 'Unsqueeze', 'Squeeze', 'Flatten'],
  grad: ({ g, node, dy }) => [g.op('Reshape', [dy[0]!, g.op('Shape', [node.inputs[0]])])],
};

export const expandRule: GradRule = {
  ops: ['Expand'],
  grad: ({ g, node, dy }) => [unbroadcast(g, dy[0]!, node.inputs[0])],
};
