// Shape plumbing shared by gradient rules: undoing broadcasting and making zeros.
import type { Graph } from '../graph/graph.ts';

/** Sums `dy` over the axes along which `x` was broadcast, so the gradient has x's shape. */
export function unbroadcast(g: Graph, dy: string, x: string): string {
  const ys = g.info(dy).shape;
  const xs = g.info(x).shape;
  const lead = ys.length - xs.length;
  let out = dy;
  if (lead > 0) {
    out = g.op('ReduceSum', [out, g.i64(Array.from({ length: lead }, (_, i) => i))], { keepdims: 0 });
  }
  const axes: number[] = [];
  xs.forEach((d, i) => {
    const yd = ys[i + lead];
    if (d === 1 && yd !== 1) axes.push(i);
    else if (d === null && yd !== null) {
      throw new Error(`cannot tell whether '${x}' was broadcast along axis ${i}: give it a static or symbolic dim`);
    }
  });
  if (axes.length) out = g.op('ReduceSum', [out, g.i64(axes)], { keepdims: 1 });
  return out;
}

/** Zeros with the shape and dtype of `like`. */
export function zerosLike(g: Graph, like: string): string {
  const { dtype } = g.info(like);
  return g.op('ConstantOfShape', [g.op('Shape', [like])], { value: { tensor: { dtype, values: [0] } } });
}

/** Swaps the last two axes. */
export function transposeLast2(g: Graph, x: string): string {
  const r = g.info(x).shape.length;
  const perm = Array.from({ length: r }, (_, i) => i);
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return g.op('Transpose', [x], { perm });
}

/** Normalised axes (negative counted from the end) for an input of rank r. */
export function normAxes(axes: number[], r: number): number[] {
  return axes.map((a) => (a < 0 ? a + r : a));
}
