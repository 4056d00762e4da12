// Cast between float types passes the gradient back in the source type.
import { ONNX_DTYPE, isFloat } from '../../graph/dtype.ts';
import type { GradRule } from '../rule.ts';

export const castRule: GradRule = {
  ops: ['Cast'],
  grad: ({ g, node, dy }) => {
    const from = g.info(node.inputs[0]).dtype;
    if (!isFloat(from)) return [null];
    return [g.op('Cast', [dy[0]!], { to: ONNX_DTYPE[from] })];
  },
};
