// RotaryEmbedding (com.microsoft, rotate-half): each pair (x_i, x_{i+d/2}) is rotated by its
// position's angle θ. A rotation's transpose is the rotation by −θ, so the input gradient is the same
// kernel applied to dy with the sine table negated: exact, one pass, no Split/Neg/Concat.
import type { GradRule } from '../rule.ts';

export const rotaryRule: GradRule = {
  ops: ['RotaryEmbedding'],
  grad: ({ g, node, dy, needs }) => {
    const [, positions, cos, sin] = node.inputs;
    if (needs[2] || needs[3]) throw new Error(`RotaryEmbedding '${node.outputs[0]}': the cos/sin tables have no gradient rule; feed them as inputs`);
    if (!needs[0]) return [null, null, null, null];
    if (node.attrs.interleaved) throw new Error('RotaryEmbedding gradient: only the rotate-half layout (interleaved 0) is supported');
    const back = g.op('RotaryEmbedding', [dy[0]!, positions, cos, g.op('Neg', [sin])], { ...node.attrs }, node.domain);
    return [back, null, null, null];
  },
};
