// Where(cond, a, b): the gradient goes to whichever branch was selected.
import type { GradRule } from '../rule.ts';
import { unbroadcast } from '../util.ts';

export const whereRule: GradRule = {
  ops: ['Where'],
  grad: ({ g, node, dy, needs }) => {
    const [cond, a, b] = node.inputs;
    const d = dy[0]!;
    const zero = g.scalarLike(0, d);
    return [
      null,
      needs[1] ? unbroadcast(g, g.op('Where', [cond, d, zero]), a) : null,
      needs[2] ? unbroadcast(g, g.op('Where', [cond, zero, d]), b) : null,
    ];
  },
};
