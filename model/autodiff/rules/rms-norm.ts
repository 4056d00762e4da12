// SimplifiedLayerNormalization (RMSNorm): y = w · x · r with r = 1/√(mean(x²) + ε) over the last axes,
// r being the kernel's second output. With n = x · r and dn = dy · w:
//   dx = r · (dn − n · mean(dn · n)),   dw = Σ over the leading axes of dy · n.
// Seven element-wise passes where the unfused graph's rules took about fifteen, and the forward is one
// fused kernel instead of six ops whose intermediates stay alive for the backward.
import { ONNX_DTYPE } from '../../graph/dtype.ts';
import type { GradRule } from '../rule.ts';

export const rmsNormRule: GradRule = {
  ops: ['SimplifiedLayerNormalization'],
  grad: ({ g, node, dy, needs }) => {
    const [x, w] = node.inputs;
    const stat = node.outputs[1];
    if (!stat) throw new Error(`SimplifiedLayerNormalization '${node.outputs[0]}': the gradient needs its inv_std_var output; emit the node with two outputs`);
    if (node.inputs.length > 2 && node.inputs[2]) throw new Error('SimplifiedLayerNormalization gradient: a bias input is not supported');
    const d = dy[0]!;
    const { dtype } = g.info(x);
    // The kernel keeps r in float32 (also for double inputs).
    const r = g.info(stat).dtype === dtype ? stat : g.op('Cast', [stat], { to: ONNX_DTYPE[dtype] });
    const rank = g.info(x).shape.length;
    const axis = (((node.attrs.axis as number | undefined) ?? -1) + rank) % rank;
    const normAxes = Array.from({ length: rank - axis }, (_, i) => axis + i);
    const n = g.op('Mul', [x, r]);
    let dx: string | null = null;
    let dw: string | null = null;
    if (needs[0]) {
      const dn = g.op('Mul', [d, w]);
      const proj = g.op('ReduceMean', [g.op('Mul', [dn, n]), g.i64(normAxes)], { keepdims: 1 });
      dx = g.op('Mul', [g.op('Sub', [dn, g.op('Mul', [n, proj])]), r]);
    }
    if (needs[1]) dw = g.op('ReduceSum', [g.op('Mul', [d, n]), g.i64(Array.from({ length: axis }, (_, i) => i))], { keepdims: 0 });
    return [dx, dw];
  },
};
