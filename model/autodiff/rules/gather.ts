// Gather (embedding lookup) and GatherElements: the gradient scatter-adds into zeros, so a token
// that appears several times accumulates every contribution.
import type { GradRule } from '../rule.ts';
import { zerosLike } from '../util.ts';

export const gatherRule: GradRule = {
  ops: ['Gather'],
  grad: ({ g, node, dy }) => {
    const [data, indices] = node.inputs;
    if (((node.attrs.axis as number | undefined) ?? 0) !== 0) throw new Error('Gather gradient: only axis 0 is supported');
    const idx = g.op('Unsqueeze', [indices, g.i64([-1])]);
    return [g.op('ScatterND', [zerosLike(g, data), idx, dy[0]!], { reduction: 'add' }), null];
  },
};

export const gatherElementsRule: GradRule = {
  ops: ['GatherElements'],
  grad: ({ g, node, dy }) => {
    const [data, indices] = node.inputs;
    const axis = (node.attrs.axis as number | undefined) ?? 0;
    return [g.op('ScatterElements', [zerosLike(g, data), indices, dy[0]!], { axis, reduction: 'add' }), null];
  },
};
