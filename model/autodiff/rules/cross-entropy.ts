// SoftmaxCrossEntropyLoss over [N, C] logits with ignore_index: d/dlogits = (softmax - onehot) for
import { ONNX_DTYPE } from '../../graph/dtype.ts';
// counted rows, 0 for ignored ones, scaled by the incoming gradient. Only reductions 'sum' and
// 'none' are supported, because the trainer keeps loss-sum and token count apart.
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
    const classes = g.i64(Array.from({ length: shape[1] }, (_, i) => i));
    const lab = g.op('Unsqueeze', [labels, g.i64([1])]);
    const onehot = g.op('Cast', [g.op('Equal', [lab, g.op('Unsqueeze', [classes, g.i64([0])])])], { to: ONNX_DTYPE[dtype] });
    const ignore = (node.attrs.ignore_index as number | undefined) ?? -100;
    const kept = g.op('Cast', [g.op('Not', [g.op('Equal', [lab, g.i64([ignore])])])], { to: ONNX_DTYPE[dtype] });
    const scale = reduction === 'sum' ? g.op('Mul', [kept, dy[0]!]) : g.op('Mul', [kept, g.op('Unsqueeze', [dy[0]!, g.i64([1])])]);
    const diff = g.op('Sub', [g.op('Softmax', [logits], { axis: 1 }), onehot]);
    return [g.op('Mul', [diff, scale]), null];
  },
};
