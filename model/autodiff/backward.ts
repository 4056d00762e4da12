// Reverse-mode autodiff over a builder graph: appends the backward nodes to the same graph, so the
// backward model recomputes the forward it needs from the range's inputs (activation checkpointing).
import { isFloat } from '../graph/dtype.ts';
import type { Graph } from '../graph/graph.ts';
import { RULES } from './rules/index.ts';
import type { GradRule } from './rule.ts';

const NON_DIFFERENTIABLE = new Set(['Shape', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'Not', 'And', 'Or', 'ConstantOfShape', 'Floor', 'Ceil']);

const registry = new Map<string, GradRule>();
for (const rule of RULES) {
  for (const op of rule.ops) {
    if (registry.has(op)) throw new Error(`two gradient rules for ${op}`);
    registry.set(op, rule);
  }
}

export function hasGradRule(op: string): boolean {
  return registry.has(op);
}

export interface Seed {
  /** A value of the forward graph... */
  value: string;
  /** ...and the name of the gradient flowing into it (a graph input or a constant). */
  grad: string;
}

/**
 * Builds d(seeds)/d(wrt) into `g`. Returns the gradient value of each `wrt` name, or null for a
 * value the seeds do not depend on. Only gradients on a path from `wrt` to a seed are built.
 */
export function backward(g: Graph, seeds: Seed[], wrt: string[]): Map<string, string | null> {
  const requires = new Set(wrt);
  for (const n of g.nodes) {
    if (NON_DIFFERENTIABLE.has(n.op)) continue;
    if (n.inputs.some((i) => requires.has(i))) {
      for (const o of n.outputs) if (isFloat(g.info(o).dtype)) requires.add(o);
    }
  }

  const pending = new Map<string, string[]>();
  const add = (value: string, grad: string) => {
    const list = pending.get(value);
    if (list) list.push(grad);
    else pending.set(value, [grad]);
  };
  const total = (value: string): string | null => {
    const list = pending.get(value);
    if (!list || list.length === 0) return null;
    const sum = list.length === 1 ? list[0] : g.op('Sum', list);
    pending.set(value, [sum]);
    return sum;
  };
  for (const s of seeds) if (requires.has(s.value)) add(s.value, s.grad);

  const forward = [...g.nodes];
  for (let k = forward.length - 1; k >= 0; k--) {
    const node = forward[k];
    const dy = node.outputs.map(total);
    if (dy.every((d) => d === null)) continue;
    const needs = node.inputs.map((i) => i !== '' && requires.has(i));
    if (!needs.some(Boolean)) continue;
    const rule = registry.get(node.op);
    if (!rule) throw new Error(`no gradient rule for ${node.op} (node producing '${node.outputs[0]}')`);
    const grads = rule.grad({ g, node, dy, needs });
    grads.forEach((gi, i) => {
      if (gi && needs[i]) add(node.inputs[i], gi);
    });
  }

  const result = new Map<string, string | null>();
  for (const w of wrt) result.set(w, total(w));
  return result;
}
