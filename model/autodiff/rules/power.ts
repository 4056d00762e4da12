// Pow, Sqrt, Reciprocal: expressed through the forward output where that saves an op.
import type { GradRule } from '../rule.ts';
import { unbroadcast } from '../util.ts';

export const powRule: GradRule = {
  ops: ['Pow'],
  grad: ({ g, node, dy, needs }) => {
    const [x, p] = node.inputs;
    const d = dy[0]!;
    const y = node.outputs[0];
    let dx: string | null = null;
    let dp: string | null = null;
    if (needs[0]) {
      // p·x^(p-1), computed as a fresh Pow so x = 0 with p ≥ 1 stays finite.
      const pm1 = g.op('Sub', [p, g.scalarLike(1, p)]);
      dx = unbroadcast(g, g.op('Mul', [d, g.op('Mul', [p, g.op('Pow', [x, pm1])])]), x);
    }
    if (needs[1]) dp = unbroadcast(g, g.op('Mul', [d, g.op('Mul', [y, g.op('Log', [x])])]), p);
    return [dx, dp];
  },
};

export const sqrtRule: GradRule = {
  ops: ['Sqrt'],
  grad: ({ g, node, dy }) => [g.op('Div', [g.op('Mul', [dy[0]!, g.scalarLike(0.5, dy[0]!)]), node.outputs[0]])],
};

export const reciprocalRule: GradRule = {
  ops: ['Reciprocal'],
  grad: ({ g, node, dy }) => {
    const y = node.outputs[0];
    return [g.op('Neg', [g.op('Mul', [dy[0]!, g.op('Mul', [y, y])])])];
  },
};
