// Concat, Slice and Split: each is the other's gradient (slice ↔ zero-pad, concat ↔ split).
import type { GradRule } from '../rule.ts';
import { zerosLike } from '../util.ts';

function staticDim(d: unknown, what: string): number {
  if (typeof d !== 'number') throw new Error(`${what}: needs a static size along the axis`);
  return d;
}

export const concatRule: GradRule = {
  ops: ['Concat'],
  grad: ({ g, node, dy, needs }) => {
    const r = g.info(node.inputs[0]).shape.length;
    const axis = ((node.attrs.axis as number) + r) % r;
    const sizes = node.inputs.map((x) => staticDim(g.info(x).shape[axis], 'Concat gradient'));
    const parts = g.opN('Split', [dy[0]!, g.i64(sizes)], sizes.length, { axis });
    return parts.map((p, i) => (needs[i] ? p : null));
  },
};

const TO_END = 2 ** 62;

export const sliceRule: GradRule = {
  ops: ['Slice'],
  grad: ({ g, node, dy }) => {
    const [x, s, e, a] = node.inputs;
    const shape = g.info(x).shape;
    const r = shape.length;
    const starts = g.constValue(s)!;
    const ends = g.constValue(e)!;
    const axes = a ? g.constValue(a)! : starts.map((_, i) => i);
    const pads = new Array<number>(2 * r).fill(0);
    axes.forEach((axis, i) => {
      const ax = (axis + r) % r;
      const dim = shape[ax];
      const open = ends[i] >= TO_END;
      if (typeof dim !== 'number') {
        // Exact on a symbolic dim when the slice is [k, end) or [k, -m): the padding is known.
        if (starts[i] < 0 || (!open && ends[i] >= 0)) throw new Error('Slice gradient: this slice of a symbolic dim needs a static size');
        pads[ax] = starts[i];
        pads[ax + r] = open ? 0 : -ends[i];
        return;
      }
      const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
      pads[ax] = clamp(starts[i]);
      pads[ax + r] = dim - clamp(ends[i]);
    });
    return [g.op('Pad', [dy[0]!, g.i64(pads)])];
  },
};

export const splitRule: GradRule = {
  ops: ['Split'],
  grad: ({ g, node, dy }) => {
    const axis = (node.attrs.axis as number | undefined) ?? 0;
    const parts = node.outputs.map((o, i) => dy[i] ?? zerosLike(g, o));
    return [g.op('Concat', parts, { axis })];
  },
};
