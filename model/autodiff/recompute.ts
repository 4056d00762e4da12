// A backward graph recomputes the forward from the range input, then runs the gradient nodes. A
// float32 Cast of a half-precision frozen weight computed in that forward would stay alive until the
// gradient node that reuses it, so every block's upcast weight would be resident at once. This pass
// gives gradient nodes their own upcast, from a second graph input fed the same buffer (a distinct
// input so that ONNX Runtime's common-subexpression elimination cannot merge it back), and each
// upcast then lives only while its block runs.
import type { Graph } from '../graph/graph.ts';

/** Ops that only change a weight's type or layout: cheap to redo. */
const WEIGHT_OPS = new Set(['Cast', 'Transpose']);

/**
 * Rewrites the nodes from index `gradStart` on (the gradient part) to recompute any value derived
 * only from `roots` through WEIGHT_OPS. Returns the added inputs, each mapped to the root it aliases.
 */
export function recomputeWeightChains(g: Graph, gradStart: number, roots: ReadonlySet<string>): Map<string, string> {
  const derived = weightChains(g, roots, gradStart); // value -> index of its producer in the forward part
  const aliases = new Map<string, string>();
  const copies = new Map<string, string>();
  const copyOf = (value: string, added: typeof g.nodes): string => {
    if (roots.has(value)) {
      const alias = `${value}.recompute`;
      if (!aliases.has(alias)) {
        const info = g.info(value);
        g.input(alias, info.dtype, info.shape);
        aliases.set(alias, value);
      }
      return alias;
    }
    let c = copies.get(value);
    if (c) return c;
    const n = g.nodes[derived.get(value)!];
    c = g.op(n.op, [copyOf(n.inputs[0], added)], n.attrs, n.domain);
    added.push(g.nodes.pop()!);
    copies.set(value, c);
    return c;
  };
  for (let k = gradStart; k < g.nodes.length; k++) {
    const n = g.nodes[k];
    const added: typeof g.nodes = [];
    n.inputs = n.inputs.map((i) => (derived.has(i) ? copyOf(i, added) : i));
    // Producers go right before their first consumer, keeping the node list in topological order.
    g.nodes.splice(k, 0, ...added);
    k += added.length;
  }
  return aliases;
}

/** Values computed from `roots` through WEIGHT_OPS alone, among the first `end` nodes, with their producer's index. */
function weightChains(g: Graph, roots: ReadonlySet<string>, end = g.nodes.length): Map<string, number> {
  const derived = new Map<string, number>();
  for (let k = 0; k < end; k++) {
    const n = g.nodes[k];
    if (WEIGHT_OPS.has(n.op) && n.inputs.length === 1 && (roots.has(n.inputs[0]) || derived.has(n.inputs[0]))) derived.set(n.outputs[0], k);
  }
  return derived;
}

/**
 * Moves the weight chains of `roots` to the front of the node list. ONNX Runtime's default execution
 * order then runs each upcast just before its consumer; left where the builder put them, it ran them
 * all first and held every block's float32 weights at once (16 chained 2048×2048 layers: 290 MB
 * above the inputs where hoisted chains peak at 25 MB; measured with onnxruntime-node 1.30).
 */
export function hoistWeightChains(g: Graph, roots: ReadonlySet<string>): void {
  if (roots.size === 0) return;
  const chain = new Set(weightChains(g, roots).values());
  const front = g.nodes.filter((_, k) => chain.has(k));
  const rest = g.nodes.filter((_, k) => !chain.has(k));
  g.nodes.splice(0, g.nodes.length, ...front, ...rest);
}
