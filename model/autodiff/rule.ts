// The contract between the autodiff engine and one op's gradient rule.
import type { Graph, Node } from '../graph/graph.ts';

export interface GradContext {
  g: Graph;
  node: Node;
  /** Gradient flowing into each output of the node; null where that output does not reach the loss. */
  dy: (string | null)[];
  /** Whether input i needs a gradient (frozen weights, indices and shapes do not). */
  needs: boolean[];
}

/** Returns one gradient per input of the node; null where none is needed or none exists. */
export type GradFn = (ctx: GradContext) => (string | null)[];

export interface GradRule {
  ops: readonly string[];
  grad: GradFn;
}
