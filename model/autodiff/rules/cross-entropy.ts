// SoftmaxCrossEntropyLoss over [N, C] logits with ignore_index: d/dlogits = (softmax - onehot) for
// counted rows, 0 for ignored ones, scaled by the incoming gradient. Only reductions 'sum' and
// 'none' are supported, because the trainer keeps loss-sum and token count apart.
import { ONNX_DTYPE } from '../../graph/dtype.ts';
import type { GradRule } from '../rule.ts';

export const crossEntropyRule: GradRule = {
  ops: ['SoftmaxCrossEntropyLoss'],
  grad: ({ g, node, dy }) => {
    const [logits, labels] = node.inputs;
    const reduction = (node.attrs.reduction as string | undefined) ?? 'mean';
    if (reduction !== 'sum' && reduction !== 'none') throw new Error(`SoftmaxCrossEntropyLoss gradient: reduction '${reduction}' is not supported`);
    const shape = g.info(logits).shape;
    if (shape.length !== 2 || typeof shape[1] !== 'number') throw new Error('SoftmaxCrossEntropyLoss gradient: logits must be [N, C] with static C');
    const { dtype } = g.info(logits);
    const lab = g.op('Unsqueeze', [labels, g.i64([1])]);
    const ignore = (node.attrs.ignore_index as number | undefined) ?? -100;
    const keptMask = g.op('Not', [g.op('Equal', [lab, g.i64([ignore])])]);
    const kept = g.op('Cast', [keptMask], { to: ONNX_DTYPE[dtype] });
    const scale = reduction === 'sum' ? g.op('Mul', [kept, dy[0]!]) : g.op('Mul', [kept, g.op('Unsqueeze', [dy[0]!, g.i64([1])])]);
    const logProb = node.outputs[1];
    if (logProb) {
      // softmax = exp(log_prob) from the kernel's second output, and 1 subtracted at each row's label
      // in place (ignored rows point at class 0 and are zeroed by `scale`): three passes over [N, C]
      // where rebuilding the softmax and a one-hot took about seven.
      const probs = g.op('Exp', [logProb]);
      const at = g.op('Where', [keptMask, lab, g.i64([0])]);
      const picked = g.op('Sub', [g.op('GatherElements', [probs, at], { axis: 1 }), g.scalarLike(1, probs)]);
      return [g.op('Mul', [g.op('ScatterElements', [probs, at, picked], { axis: 1 }), scale]), null];
    }
    const classes = g.i64(Array.from({ length: shape[1] }, (_, i) => i));
    const onehot = g.op('Cast', [g.op('Equal', [lab, g.op('Unsqueeze', [classes, g.i64([0])])])], { to: ONNX_DTYPE[dtype] });
    const diff = g.op('Sub', [g.op('Softmax', [logits], { axis: 1 }), onehot]);
    return [g.op('Mul', [diff, scale]), null];
  },
};
