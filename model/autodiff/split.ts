// The zero-bubble split of one backward graph (Qi et al., "Zero Bubble Pipeline Parallelism"): an
// input-gradient graph B that yields what the previous rank waits for, and a weight-gradient graph W
// that can run later. The two are cut from the same graph, so together they run exactly its nodes:
// B also outputs the intermediate values W needs (the stash: mostly the output gradients and inputs
// of the weight MatMuls), and W starts from them instead of recomputing anything B computed.
import { Graph } from '../graph/graph.ts';
import { liveNodes } from '../graph/serialize.ts';

export interface SplitBackward {
  /** The input-gradient graph: `bOutputs` plus the stash; null when nothing is asked of it. */
  b: Graph | null;
  /** The weight-gradient graph: `wOutputs`, fed the stash besides the usual inputs; null without weights. */
  w: Graph | null;
  /** Values B hands to W, in a stable order. */
  stash: string[];
}

function withOutputs(g: Graph, name: string, outputs: readonly string[]): Graph {
  const c = g.clone(name);
  c.outputs.splice(0, c.outputs.length, ...outputs);
  return c;
}

/** Splits `g` (a built backward graph) into B (`bOutputs`) and W (`wOutputs`). */
export function splitBackward(g: Graph, bOutputs: readonly string[], wOutputs: readonly string[]): SplitBackward {
  const bNodes = bOutputs.length > 0 ? liveNodes(withOutputs(g, g.name, bOutputs)) : [];
  // Nodes are compared by their outputs: liveNodes walks a clone, whose node objects are copies.
  const produced = new Set(bNodes.flatMap((n) => n.outputs));
  if (wOutputs.length === 0) return { b: bOutputs.length > 0 ? withOutputs(g, `${g.name}_input`, bOutputs) : null, w: null, stash: [] };
  const wAll = liveNodes(withOutputs(g, g.name, wOutputs));
  const stash: string[] = [];
  const seen = new Set<string>();
  for (const n of wAll) {
    if (n.outputs.some((o) => produced.has(o))) continue;
    for (const i of n.inputs) {
      if (i && produced.has(i) && !seen.has(i)) {
        seen.add(i);
        stash.push(i);
      }
    }
  }
  // A W output that B already computed (possible for a parameter whose gradient path B needed)
  // is handed over as stash too.
  for (const o of wOutputs) if (produced.has(o) && !seen.has(o)) (seen.add(o), stash.push(o));

  const b = bOutputs.length > 0 ? withOutputs(g, `${g.name}_input`, [...bOutputs, ...stash]) : null;
  const w = withOutputs(g, `${g.name}_weight`, wOutputs);
  // W takes the stash as inputs: drop the nodes that produced it (and everything else B ran).
  const keep = w.nodes.filter((n) => !n.outputs.some((o) => produced.has(o)));
  w.nodes.splice(0, w.nodes.length, ...keep);
  w.inputs.push(...stash);
  return { b, w, stash };
}

export interface SplitForward {
  /** The forward part: every node the seeds do not reach, with `forwardOutputs` and the stash as outputs. */
  f: Graph;
  /** The gradient part: the nodes the seeds reach, fed the stash (and the graph's inputs) instead of recomputing. */
  b: Graph;
  /** Values the forward part hands to the gradient part, in a stable order. */
  stash: string[];
}

/**
 * Splits a backward graph that recomputes its forward (`g`, built by autodiff from a forward graph) at the
 * seeds of its gradients: F computes the forward once and keeps what the gradient nodes read (the saved
 * activations), B computes only the gradients. Together they run the nodes of `g` except that values
 * depending on no activation (a frozen weight's transpose or upcast; constants) are recomputed in B
 * rather than stashed, so the stash is activations only. `activations` names the graph inputs that carry
 * data (hidden state, ids, RoPE tables, masks), `seeds` those that carry the output's gradient.
 */
export function splitForward(g: Graph, seeds: readonly string[], activations: readonly string[], forwardOutputs: readonly string[]): SplitForward {
  const graded = new Set(seeds);
  const dataDependent = new Set(activations);
  const fNodes = [];
  const bNodes = [];
  // Live for the gradients and for the forward's own outputs (the range output no gradient reads).
  for (const n of liveNodes(withOutputs(g, g.name, [...g.outputs, ...forwardOutputs]))) {
    const ins = n.inputs.filter((i): i is string => !!i);
    if (ins.some((i) => dataDependent.has(i))) n.outputs.forEach((o) => dataDependent.add(o));
    if (ins.some((i) => graded.has(i))) {
      n.outputs.forEach((o) => graded.add(o));
      bNodes.push(n);
    } else fNodes.push(n);
  }
  const fProduced = new Set(fNodes.flatMap((n) => n.outputs));
  // Weight-only values the gradient nodes read are recomputed in B (with the nodes that make them).
  const needed = new Set<string>();
  const stash: string[] = [];
  const want = (v: string) => {
    if (!fProduced.has(v) || needed.has(v)) return;
    needed.add(v);
    if (dataDependent.has(v)) stash.push(v);
  };
  for (const n of bNodes) for (const i of n.inputs) if (i) want(i);
  for (const o of g.outputs) want(o);
  const missing = forwardOutputs.filter((o) => !fProduced.has(o));
  if (missing.length) throw new Error(`splitForward: the forward part does not compute ${missing.join(', ')}`);

  const f = withOutputs(g, `${g.name}_forward`, [...forwardOutputs, ...stash.filter((s) => !forwardOutputs.includes(s))]);
  const b = withOutputs(g, `${g.name}_gradients`, g.outputs);
  const stashed = new Set(stash);
  // B keeps its gradient nodes and the weight-only forward nodes; stashed values become inputs.
  const keep = b.nodes.filter((n) => !n.outputs.some((o) => stashed.has(o) || (fProduced.has(o) && dataDependent.has(o))));
  b.nodes.splice(0, b.nodes.length, ...keep);
  b.inputs.push(...stash);
  return { f, b, stash };
}
