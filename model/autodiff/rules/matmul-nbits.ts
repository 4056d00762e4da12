// MatMulNBits (com.microsoft): Y = A·Wqᵀ with Wq a frozen 4-bit weight, so only A gets a gradient:
// dA = dY·Wq, with Wq rebuilt by DequantizeLinear from the same codes: exact. The alternative, a second
// MatMulNBits over a re-quantized Wqᵀ, was ~12% faster for dA (x [1024, 512], W [1376, 512], one
// thread: 7.3 vs 8.3 ms) but it is not Wq: a column of Wq mixes the scales of many rows, so re-blocking
// it along `out` adds a second quantization error to the gradient, and a second copy of the weight.
// emitMatMulNBits has already emitted this Wq with the forward (see there why) from the same graph
// inputs, so this finds it.
import { dequantizedOfNode } from '../../graph/matmul-nbits.ts';
import type { GradRule } from '../rule.ts';

export const matmulNBitsRule: GradRule = {
  ops: ['MatMulNBits'],
  grad: ({ g, node, dy, needs }) => {
    if (needs.slice(1).some(Boolean)) throw new Error(`MatMulNBits '${node.outputs[0]}': 4-bit weights are frozen and have no gradient`);
    const rest = node.inputs.slice(1).map(() => null);
    if (!needs[0]) return [null, ...rest];
    const wq = dequantizedOfNode(g, node);
    return [g.op('MatMul', [dy[0]!, wq]), ...rest];
  },
};
