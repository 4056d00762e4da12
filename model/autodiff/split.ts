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
