// Every gradient rule against central finite differences, broadcasting cases included.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backward, hasGradRule } from '../model/autodiff/backward.ts';
import { Graph } from '../model/graph/graph.ts';
import { checkGradients, type FdCase } from './support/finite-diff.ts';

const i64 = (values: number[]) => BigInt64Array.from(values, BigInt);

const CASES: FdCase[] = [
  { name: 'MatMul 3-D x 2-D weight', inputs: [{ name: 'a', shape: [2, 3, 4] }, { name: 'w', shape: [4, 5] }], build: (g, x) => g.op('MatMul', [x.a, x.w]) },
  { name: 'MatMul batched', inputs: [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [2, 4, 5] }], build: (g, x) => g.op('MatMul', [x.a, x.b]) },
  { name: 'MatMul broadcast batch', inputs: [{ name: 'a', shape: [2, 1, 3, 4] }, { name: 'b', shape: [1, 3, 4, 2] }], build: (g, x) => g.op('MatMul', [x.a, x.b]) },
  { name: 'MatMul 2-D with transpose', inputs: [{ name: 'a', shape: [3, 4] }, { name: 'w', shape: [5, 4] }], build: (g, x) => g.op('MatMul', [x.a, g.op('Transpose', [x.w], { perm: [1, 0] })]) },
  { name: 'MatMul symbolic batch', inputs: [{ name: 'a', shape: [2, 3, 4], decl: ['batch', 'seq', 4] }, { name: 'w', shape: [4, 3] }], build: (g, x) => g.op('MatMul', [x.a, x.w]) },
  { name: 'Add broadcast trailing', inputs: [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [4] }], build: (g, x) => g.op('Add', [x.a, x.b]) },
  { name: 'Add broadcast middle', inputs: [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [2, 1, 4] }], build: (g, x) => g.op('Add', [x.a, x.b]) },
  { name: 'Sub both broadcast', inputs: [{ name: 'a', shape: [3, 1] }, { name: 'b', shape: [1, 4] }], build: (g, x) => g.op('Sub', [x.a, x.b]) },
  { name: 'Mul broadcast', inputs: [{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [3] }], build: (g, x) => g.op('Mul', [x.a, x.b]) },
  { name: 'Mul same value twice', inputs: [{ name: 'a', shape: [2, 3] }], build: (g, x) => g.op('Mul', [x.a, x.a]) },
  { name: 'Div broadcast', inputs: [{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [2, 1], positive: true }], build: (g, x) => g.op('Div', [x.a, x.b]) },
  { name: 'Neg', inputs: [{ name: 'a', shape: [5] }], build: (g, x) => g.op('Neg', [x.a]) },
  { name: 'Pow constant exponent', inputs: [{ name: 'a', shape: [2, 3], positive: true }], build: (g, x) => g.op('Pow', [x.a, g.constant(3, 'float64')]) },
  { name: 'Pow both inputs', inputs: [{ name: 'a', shape: [2, 3], positive: true }, { name: 'p', shape: [3], positive: true }], build: (g, x) => g.op('Pow', [x.a, x.p]) },
  { name: 'Sqrt', inputs: [{ name: 'a', shape: [4], positive: true }], build: (g, x) => g.op('Sqrt', [x.a]) },
  { name: 'Reciprocal', inputs: [{ name: 'a', shape: [4], positive: true }], build: (g, x) => g.op('Reciprocal', [x.a]) },
  { name: 'Exp', inputs: [{ name: 'a', shape: [2, 3] }], build: (g, x) => g.op('Exp', [x.a]) },
  { name: 'Log', inputs: [{ name: 'a', shape: [2, 3], positive: true }], build: (g, x) => g.op('Log', [x.a]) },
  { name: 'Sigmoid', inputs: [{ name: 'a', shape: [2, 3] }], build: (g, x) => g.op('Sigmoid', [x.a]) },
  { name: 'SiLU (x·sigmoid x)', inputs: [{ name: 'a', shape: [2, 5] }], build: (g, x) => g.op('Mul', [x.a, g.op('Sigmoid', [x.a])]) },
  { name: 'Tanh', inputs: [{ name: 'a', shape: [6] }], build: (g, x) => g.op('Tanh', [x.a]) },
  { name: 'Softmax last axis', inputs: [{ name: 'a', shape: [2, 3, 5] }], build: (g, x) => g.op('Softmax', [x.a], { axis: -1 }) },
  { name: 'Softmax axis 1', inputs: [{ name: 'a', shape: [2, 4, 3] }], build: (g, x) => g.op('Softmax', [x.a], { axis: 1 }) },
  { name: 'LogSoftmax', inputs: [{ name: 'a', shape: [3, 5] }], build: (g, x) => g.op('LogSoftmax', [x.a], { axis: -1 }) },
  { name: 'ReduceSum keepdims 0', inputs: [{ name: 'a', shape: [2, 3, 4] }], build: (g, x) => g.op('ReduceSum', [x.a, g.i64([1])], { keepdims: 0 }) },
  { name: 'ReduceSum all', inputs: [{ name: 'a', shape: [2, 3] }], build: (g, x) => g.op('ReduceSum', [x.a], { keepdims: 1 }) },
  { name: 'ReduceMean last', inputs: [{ name: 'a', shape: [2, 3, 4] }], build: (g, x) => g.op('ReduceMean', [x.a, g.i64([-1])], { keepdims: 1 }) },
  { name: 'ReduceMean symbolic axis', inputs: [{ name: 'a', shape: [2, 3, 4], decl: [2, 'seq', 4] }], build: (g, x) => g.op('ReduceMean', [x.a, g.i64([1])], { keepdims: 0 }) },
  { name: 'ReduceMax', inputs: [{ name: 'a', shape: [3, 4] }], build: (g, x) => g.op('ReduceMax', [x.a, g.i64([1])], { keepdims: 0 }) },
  { name: 'Transpose', inputs: [{ name: 'a', shape: [2, 3, 4] }], build: (g, x) => g.op('Transpose', [x.a], { perm: [2, 0, 1] }) },
  { name: 'Reshape', inputs: [{ name: 'a', shape: [2, 3, 4] }], build: (g, x) => g.op('Reshape', [x.a, g.i64([6, -1])]) },
  { name: 'Unsqueeze + Squeeze', inputs: [{ name: 'a', shape: [2, 3] }], build: (g, x) => g.op('Mul', [g.op('Unsqueeze', [x.a, g.i64([1])]), g.op('Squeeze', [g.op('Unsqueeze', [x.a, g.i64([0])]), g.i64([0])])]) },
  { name: 'Expand', inputs: [{ name: 'a', shape: [3, 1] }], build: (g, x) => g.op('Expand', [x.a, g.i64([2, 3, 4])]) },
  { name: 'Concat', inputs: [{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [2, 2] }], build: (g, x) => g.op('Concat', [x.a, x.b], { axis: 1 }) },
  { name: 'Slice last dim', inputs: [{ name: 'a', shape: [2, 3, 6] }], build: (g, x) => g.op('Slice', [x.a, g.i64([1]), g.i64([4]), g.i64([-1])]) },
  { name: 'Slice to end of symbolic dim', inputs: [{ name: 'a', shape: [2, 5], decl: [2, 'seq'] }], build: (g, x) => g.op('Slice', [x.a, g.i64([2]), g.i64([2 ** 62]), g.i64([1])]) },
  { name: 'Split, one part unused', inputs: [{ name: 'a', shape: [2, 6] }], build: (g, x) => g.opN('Split', [x.a, g.i64([1, 2, 3])], 3, { axis: 1 })[1] },
  { name: 'rotate-half (Split, Neg, Concat)', inputs: [{ name: 'a', shape: [2, 3, 8] }], build: (g, x) => {
    const [lo, hi] = g.opN('Split', [x.a, g.i64([4, 4])], 2, { axis: -1 });
    return g.op('Concat', [g.op('Neg', [hi]), lo], { axis: -1 });
  } },
  { name: 'Gather with repeated indices', inputs: [{ name: 'w', shape: [5, 3] }, { name: 'ids', shape: [2, 4], dtype: 'int64', data: i64([0, 3, 3, 1, 4, 0, 0, 2]) }], build: (g, x) => g.op('Gather', [x.w, x.ids], { axis: 0 }) },
  { name: 'GatherElements', inputs: [{ name: 'a', shape: [3, 4] }, { name: 'idx', shape: [3, 2], dtype: 'int64', data: i64([0, 3, 2, 2, 1, 0]) }], build: (g, x) => g.op('GatherElements', [x.a, x.idx], { axis: 1 }) },
  { name: 'Where with broadcast', inputs: [{ name: 'c', shape: [2, 3], dtype: 'bool', data: Uint8Array.from([1, 0, 1, 0, 0, 1]) }, { name: 'a', shape: [2, 3] }, { name: 'b', shape: [3] }], build: (g, x) => g.op('Where', [x.c, x.a, x.b]) },
  { name: 'additive causal mask + softmax', inputs: [{ name: 'a', shape: [2, 4, 4] }], build: (g, x) => {
    const mask = g.initializer('mask', 'float64', [4, 4], Float64Array.from({ length: 16 }, (_, k) => ((k % 4) > Math.floor(k / 4) ? -1e9 : 0)));
    return g.op('Softmax', [g.op('Add', [x.a, mask])], { axis: -1 });
  } },
  { name: 'Cast float64 → float32 → float64', eps: 1e-2, tol: 1e-4, inputs: [{ name: 'a', shape: [4] }], build: (g, x) => g.op('Cast', [g.op('Mul', [g.op('Cast', [x.a], { to: 1 }), g.constant(2, 'float32')])], { to: 11 }) },
  { name: 'SimplifiedLayerNormalization (RMSNorm, fused kernel; 1/rms kept in float32)', eps: 1e-3, tol: 1e-4, inputs: [{ name: 'x', shape: [2, 3, 8] }, { name: 'w', shape: [8] }], build: (g, x) => g.opN('SimplifiedLayerNormalization', [x.x, x.w], 2, { axis: -1, epsilon: { float: 1e-5 } })[0] },
  { name: 'SimplifiedLayerNormalization, symbolic rows', eps: 1e-3, tol: 1e-4, inputs: [{ name: 'x', shape: [3, 4, 6], decl: ['batch', 'seq', 6] }, { name: 'w', shape: [6] }], build: (g, x) => g.opN('SimplifiedLayerNormalization', [x.x, x.w], 2, { axis: -1, epsilon: { float: 1e-6 } })[0] },
  { name: 'RotaryEmbedding (fused kernel, float32)', eps: 1e-2, tol: 1e-4, inputs: [{ name: 'x', shape: [2, 3, 5, 8], dtype: 'float32', data: Float32Array.from({ length: 240 }, (_, i) => Math.sin(1.7 * i)) }, { name: 'c', shape: [5, 4], dtype: 'float32', data: Float32Array.from({ length: 20 }, (_, i) => Math.cos(0.3 * i)), grad: false }, { name: 's', shape: [5, 4], dtype: 'float32', data: Float32Array.from({ length: 20 }, (_, i) => Math.sin(0.3 * i)), grad: false }], build: (g, x) => g.op('RotaryEmbedding', [x.x, g.i64([0]), x.c, x.s], { interleaved: 0 }, 'com.microsoft') },
  { name: 'cross-entropy sum with ignore_index', inputs: [{ name: 'z', shape: [5, 4] }, { name: 'y', shape: [5], dtype: 'int64', data: i64([1, -100, 3, 0, -100]) }], build: (g, x) => g.op('SoftmaxCrossEntropyLoss', [x.z, x.y], { reduction: 'sum', ignore_index: -100 }) },
  { name: 'cross-entropy sum from the kernel log-probabilities', inputs: [{ name: 'z', shape: [5, 4] }, { name: 'y', shape: [5], dtype: 'int64', data: i64([1, -100, 3, 0, -100]) }], build: (g, x) => g.opN('SoftmaxCrossEntropyLoss', [x.z, x.y], 2, { reduction: 'sum', ignore_index: -100 })[0] },
  { name: 'cross-entropy per row from the kernel log-probabilities', inputs: [{ name: 'z', shape: [4, 6] }, { name: 'y', shape: [4], dtype: 'int64', data: i64([5, 2, -100, 0]) }], build: (g, x) => g.opN('SoftmaxCrossEntropyLoss', [x.z, x.y], 2, { reduction: 'none', ignore_index: -100 })[0] },
  { name: 'cross-entropy per row', inputs: [{ name: 'z', shape: [4, 6] }, { name: 'y', shape: [4], dtype: 'int64', data: i64([5, 2, -100, 0]) }], build: (g, x) => g.op('SoftmaxCrossEntropyLoss', [x.z, x.y], { reduction: 'none', ignore_index: -100 }) },
];

for (const c of CASES) {
  test(`gradient: ${c.name}`, async () => {
    const { checked } = await checkGradients(c);
    assert.ok(checked > 0);
  });
}

test('a wrong gradient rule is caught by the finite-difference check', async () => {
  // Guards the guard: Tanh's derivative swapped for Sigmoid's must fail.
  const bad: FdCase = { name: 'sigmoid vs tanh', inputs: [{ name: 'a', shape: [4] }], build: (g, x) => g.op('Tanh', [x.a]) };
  const original = (await import('../model/autodiff/rules/activation.ts')).tanhRule.grad;
  const rules = await import('../model/autodiff/rules/activation.ts');
  rules.tanhRule.grad = rules.sigmoidRule.grad;
  try {
    await assert.rejects(() => checkGradients(bad), /finite difference/);
  } finally {
    rules.tanhRule.grad = original;
  }
});

test('every op the cases use has a rule, and an op without one is named in the error', () => {
  assert.ok(hasGradRule('MatMul') && hasGradRule('SoftmaxCrossEntropyLoss'));
  const g = new Graph();
  const a = g.input('a', 'float32', [3]);
  const y = g.op('Erf', [a]);
  assert.throws(() => backward(g, [{ value: y, grad: g.constant([1, 1, 1], 'float32') }], [a]), /no gradient rule for Erf/);
});

test('only requested gradients are built: a frozen weight gets no weight-gradient GEMM', () => {
  const g = new Graph();
  const x = g.input('x', 'float32', ['batch', 4]);
  const w = g.initializer('w', 'float32', [4, 4], new Float32Array(16));
  const y = g.op('MatMul', [x, w]);
  const before = g.nodes.length;
  const grads = backward(g, [{ value: y, grad: g.input('dy', 'float32', ['batch', 4]) }], [x]);
  const added = g.nodes.slice(before);
  assert.equal(added.filter((n) => n.op === 'MatMul').length, 1, 'only dX = dY·Wᵀ');
  assert.ok(grads.get(x));
});

test('nothing is built when the seeds do not depend on the requested values', () => {
  const g = new Graph();
  const x = g.input('x', 'float32', [4]);
  const z = g.input('z', 'float32', [4]);
  const y = g.op('Exp', [z]);
  const before = g.nodes.length;
  const grads = backward(g, [{ value: y, grad: g.constant([1, 1, 1, 1], 'float32') }], [x]);
  assert.equal(grads.get(x), null);
  assert.equal(g.nodes.length, before);
});
