// MatMul: dA = dY·Bᵀ, dB = Aᵀ·dY, with broadcast batch dims summed away. A 2-D weight against a
// batched activation is handled as one flat GEMM rather than a batch of small ones.
import { kernelChoices } from '../../graph/kernels.ts';
import type { GradRule } from '../rule.ts';
import { transposeLast2, unbroadcast } from '../util.ts';

export const matmulRule: GradRule = {
  ops: ['MatMul'],
  grad: ({ g, node, dy, needs }) => {
    const [a, b] = node.inputs;
    const d = dy[0]!;
    const ra = g.info(a).shape.length;
    const rb = g.info(b).shape.length;
    if (ra < 2 || rb < 2) throw new Error('MatMul gradient: 1-D operands are not supported; reshape to 2-D');
    let da: string | null = null;
    let db: string | null = null;
    if (needs[0]) da = unbroadcast(g, g.op('MatMul', [d, transposeLast2(g, b)]), a);
    if (needs[1]) {
      if (rb === 2 && ra > 2) {
        const k = g.info(a).shape[ra - 1];
        const n = g.info(d).shape[g.info(d).shape.length - 1];
        if (typeof k !== 'number' || typeof n !== 'number') throw new Error('MatMul gradient: weight dims must be static');
        const a2 = g.op('Reshape', [a, g.i64([-1, k])]);
        const d2 = g.op('Reshape', [d, g.i64([-1, n])]);
        // A linear layer's B is Wᵀ: its gradient is transposed back to W's layout by the Transpose rule.
        // Written as (d2ᵀ·a2)ᵀ the two transposes meet and ONNX Runtime cancels them, leaving one GEMM
        // that reads d2 transposed and writes dW in place, instead of a GEMM and a weight-sized copy.
        db = kernelChoices().weightGradLayout && g.producer(b)?.op === 'Transpose'
          ? g.op('Transpose', [g.op('MatMul', [g.op('Transpose', [d2], { perm: [1, 0] }), a2])], { perm: [1, 0] })
          : g.op('MatMul', [g.op('Transpose', [a2], { perm: [1, 0] }), d2]);
      } else {
        db = unbroadcast(g, g.op('MatMul', [transposeLast2(g, a), d]), b);
      }
    }
    return [da, db];
  },
};
