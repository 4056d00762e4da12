// Add, Sub, Mul, Div, Neg, Sum, Identity, with broadcasting undone by summing.
import type { GradRule } from '../rule.ts';
import { unbroadcast } from '../util.ts';

export const addSubRule: GradRule = {
  ops: ['Add', 'Sub'],
  grad: ({ g, node, dy, needs }) => {
    const [a, b] = node.inputs;
    const d = dy[0]!;
    return [
      needs[0] ? unbroadcast(g, d, a) : null,
      needs[1] ? unbroadcast(g, node.op === 'Sub' ? g.op('Neg', [d]) : d, b) : null,
    ];
  },
};

export const sumRule: GradRule = {
  ops: ['Sum'],
  grad: ({ g, node, dy, needs }) => node.inputs.map((x, i) => (needs[i] ? unbroadcast(g, dy[0]!, x) : null)),
};

export const mulRule: GradRule = {
  ops: ['Mul'],
  grad: ({ g, node, dy, needs }) => {
    const [a, b] = node.inputs;
    const d = dy[0]!;
    return [
      needs[0] ? unbroadcast(g, g.op('Mul', [d, b]), a) : null,
      needs[1] ? unbroadcast(g, g.op('Mul', [d, a]), b) : null,
    ];
  },
};

// d(a/b)/db = -(a/b)/b: reuses the forward output instead of squaring b.
export const divRule: GradRule = {
  ops: ['Div'],
  grad: ({ g, node, dy, needs }) => {
    const [a, b] = node.inputs;
    const d = dy[0]!;
    return [
      needs[0] ? unbroadcast(g, g.op('Div', [d, b]), a) : null,
      needs[1] ? unbroadcast(g, g.op('Neg', [g.op('Div', [g.op('Mul', [d, node.outputs[0]]), b])]), b) : null,
    ];
  },
};

export const negRule: GradRule = {
  ops: ['Neg'],
  grad: ({ g, dy }) => [g.op('Neg', [dy[0]!])],
};

export const identityRule: GradRule = {
  ops: ['Identity'],
  grad: ({ dy }) => [dy[0]],
};
