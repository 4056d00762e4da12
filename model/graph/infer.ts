// Static shape and dtype inference for the ops the builder emits. Shapes may hold symbols ('batch',
// 'seq'); gradient rules rely on ranks and on which dims are literally 1, so inference must be exact there.
import type { DType } from './dtype.ts';
import type { Dim, Graph, Node, Shape, ValueInfo } from './graph.ts';

const UNARY = new Set([
  'Identity', 'Neg', 'Sqrt', 'Reciprocal', 'Exp', 'Log', 'Sigmoid', 'Tanh', 'Relu', 'Abs', 'Softmax',
  'LogSoftmax', 'Cos', 'Sin', 'Erf', 'Not', 'Floor', 'Ceil',
]);
const BROADCAST = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'And', 'Or']);
const COMPARE = new Set(['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual']);
const REDUCE = new Set(['ReduceSum', 'ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceSumSquare', 'ReduceLogSumExp']);
const DTYPE_OF_ONNX: Record<number, DType> = { 1: 'float32', 2: 'uint8', 3: 'int8', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 11: 'float64', 16: 'bfloat16' };

function mergeDim(a: Dim, b: Dim, where: string): Dim {
  if (a === 1) return b;
  if (b === 1) return a;
  if (a === b) return a;
  if (typeof a === 'number' && typeof b === 'number') throw new Error(`${where}: cannot broadcast ${a} with ${b}`);
  if (typeof a === 'number') return a;
  if (typeof b === 'number') return b;
  return a ?? b;
}

export function broadcastShapes(shapes: Shape[], where: string): Shape {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Shape = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const k = i - (rank - s.length);
      if (k >= 0) d = mergeDim(d, s[k], where);
    }
    out.push(d);
  }
  return out;
}

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

function reshapeShape(input: Shape, target: number[], where: string): Shape {
  const out: Shape = target.map((t, i) => (t === 0 ? input[i] : t));
  const minus = out.indexOf(-1);
  if (minus >= 0) out[minus] = inferredDim(input, out.filter((_, i) => i !== minus), where);
  return out;
}

/**
 * The dim a -1 stands for: split both sides into numeric factors and symbols; what the input has
 * that the other target dims do not account for is the answer (e.g. [b, 8, t, 4] -> [b, 2, 4, -1, 4]
 * gives t). A result that cannot be named exactly is unknown (null).
 */
function inferredDim(input: Shape, others: Dim[], where: string): Dim {
  const symbols = input.filter((d) => typeof d !== 'number');
  let numeric = 1;
  for (const d of input) if (typeof d === 'number') numeric *= d;
  let otherNumeric = 1;
  for (const d of others) {
    if (typeof d === 'number') otherNumeric *= d;
    else {
      const at = symbols.indexOf(d);
      if (at < 0) return null;
      symbols.splice(at, 1);
    }
  }
  if (symbols.includes(null)) return null;
  if (numeric % otherNumeric !== 0) {
    if (symbols.length === 0) throw new Error(`${where}: cannot reshape ${numeric} elements into groups of ${otherNumeric}`);
    return null;
  }
  const ratio = numeric / otherNumeric;
  if (symbols.length === 0) return ratio;
  if (symbols.length === 1 && ratio === 1) return symbols[0];
  return null;
}

function sliceShape(g: Graph, node: Node, input: Shape): Shape {
  const [, s, e, a, st] = node.inputs;
  const starts = g.constValue(s);
  const ends = g.constValue(e);
  if (!starts || !ends) throw new Error(`Slice ${node.outputs[0]}: starts/ends must be constants`);
  const axes = a ? g.constValue(a)! : starts.map((_, i) => i);
  const steps = st ? g.constValue(st)! : starts.map(() => 1);
  const out = [...input];
  axes.forEach((axis, i) => {
    const ax = normAxis(axis, input.length);
    const dim = input[ax];
    if (steps[i] !== 1) throw new Error('Slice: only step 1 is supported by the builder');
    if (typeof dim !== 'number') {
      // Symbolic results get derived names ('seq-1') so that equal slices of equal dims compare equal.
      const open = ends[i] >= 2 ** 60;
      if (open && starts[i] >= 0) out[ax] = starts[i] === 0 ? dim : `${dim}-${starts[i]}`;
      else if (open && starts[i] < 0) out[ax] = -starts[i];
      else if (starts[i] >= 0 && ends[i] >= 0) out[ax] = ends[i] - starts[i];
      else if (starts[i] === 0 && ends[i] < 0) out[ax] = `${dim}${ends[i]}`;
      else out[ax] = null;
      return;
    }
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
    out[ax] = Math.max(0, clamp(ends[i]) - clamp(starts[i]));
  });
  return out;
}

/** A shape value of unknown contents but static length: that many unknown dims. */
function unknownDims(g: Graph, shape: string): Shape | undefined {
  const len = g.info(shape).shape;
  return len.length === 1 && typeof len[0] === 'number' ? Array.from({ length: len[0] }, () => null) : undefined;
}

export function inferOutputs(g: Graph, node: Node): ValueInfo[] {
  const where = `${node.op} -> ${node.outputs[0]}`;
  const ins = node.inputs.map((n) => (n === '' ? undefined : g.info(n)));
  const x = ins[0]!;
  const a = node.attrs;
  const one = (dtype: DType, shape: Shape): ValueInfo[] => [{ dtype, shape }];

  if (UNARY.has(node.op)) return one(x.dtype, [...x.shape]);
  if (BROADCAST.has(node.op)) {
    return one(x.dtype, broadcastShapes(ins.map((i) => i!.shape), where));
  }
  if (COMPARE.has(node.op)) return one('bool', broadcastShapes(ins.map((i) => i!.shape), where));
  if (REDUCE.has(node.op)) {
    const keep = (a.keepdims ?? 1) === 1;
    const axesVal = node.inputs[1] ? g.constValue(node.inputs[1]) : undefined;
    if (node.inputs[1] && !axesVal) throw new Error(`${where}: axes must be a constant`);
    const axes = (axesVal ?? x.shape.map((_, i) => i)).map((ax) => normAxis(ax, x.shape.length));
    const shape = keep ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
    return one(x.dtype, shape);
  }

  switch (node.op) {
    case 'Cast':
      return one(DTYPE_OF_ONNX[a.to as number], [...x.shape]);
    case 'Shape':
      return one('int64', [x.shape.length]);
    case 'MatMul': {
      const b = ins[1]!;
      const ar = x.shape.length === 1 ? [1, x.shape[0]] : x.shape;
      const br = b.shape.length === 1 ? [b.shape[0], 1] : b.shape;
      const k1 = ar[ar.length - 1];
      const k2 = br[br.length - 2];
      if (typeof k1 === 'number' && typeof k2 === 'number' && k1 !== k2) throw new Error(`${where}: inner dims ${k1} vs ${k2}`);
      const batch = broadcastShapes([ar.slice(0, -2), br.slice(0, -2)], where);
      const shape = [...batch];
      if (x.shape.length !== 1) shape.push(ar[ar.length - 2]);
      if (b.shape.length !== 1) shape.push(br[br.length - 1]);
      return one(x.dtype, shape);
    }
    case 'Transpose': {
      const perm = (a.perm as number[] | undefined) ?? x.shape.map((_, i) => x.shape.length - 1 - i);
      return one(x.dtype, perm.map((p) => x.shape[p]));
    }
    case 'Reshape': {
      const target = g.constValue(node.inputs[1]);
      if (target) return one(x.dtype, reshapeShape(x.shape, target, where));
      const like = g.shapeValue(node.inputs[1]);
      if (!like) throw new Error(`${where}: shape must be a constant or Shape(x)`);
      return one(x.dtype, like);
    }
    case 'Expand': {
      const target = g.shapeValue(node.inputs[1]) ?? unknownDims(g, node.inputs[1]);
      if (!target) throw new Error(`${where}: shape must be a constant, Shape(x), or of static length`);
      return one(x.dtype, broadcastShapes([x.shape, target], where));
    }
    case 'Unsqueeze': {
      const axes = g.constValue(node.inputs[1])!;
      const rank = x.shape.length + axes.length;
      const norm = axes.map((ax) => normAxis(ax, rank));
      const out: Shape = [];
      let k = 0;
      for (let i = 0; i < rank; i++) out.push(norm.includes(i) ? 1 : x.shape[k++]);
      return one(x.dtype, out);
    }
    case 'Squeeze': {
      const axes = g.constValue(node.inputs[1])!.map((ax) => normAxis(ax, x.shape.length));
      return one(x.dtype, x.shape.filter((_, i) => !axes.includes(i)));
    }
    case 'Concat': {
      const axis = normAxis(a.axis as number, x.shape.length);
      const out = [...x.shape];
      const sizes = ins.map((i) => i!.shape[axis]);
      out[axis] = sizes.every((d) => typeof d === 'number') ? (sizes as number[]).reduce((s, d) => s + d, 0) : null;
      return one(x.dtype, out);
    }
    case 'Slice':
      return one(x.dtype, sliceShape(g, node, x.shape));
    case 'SimplifiedLayerNormalization': {
      // Y, then inv_std_var: 1/√(mean(x²) + ε) over the normalized axes, kept as size 1, in float32
      // (ONNX Runtime's CPU kernel stashes float even for double inputs).
      const axis = normAxis((a.axis as number | undefined) ?? -1, x.shape.length);
      const stat: ValueInfo = { dtype: 'float32', shape: x.shape.map((d, i) => (i >= axis ? 1 : d)) };
      return [{ dtype: x.dtype, shape: [...x.shape] }, stat].slice(0, node.outputs.length);
    }
    case 'RotaryEmbedding':
      return one(x.dtype, [...x.shape]);
    case 'GroupQueryAttention': {
      // com.microsoft: output like the query [b, s, heads·d]; present key/value [b, kv, total, d].
      const kvHeads = a.kv_num_heads as number;
      const d = typeof x.shape[2] === 'number' ? x.shape[2] / (a.num_heads as number) : null;
      const present: ValueInfo = { dtype: x.dtype, shape: [x.shape[0], kvHeads, null, d] };
      return [{ dtype: x.dtype, shape: [...x.shape] }, present, present].slice(0, node.outputs.length);
    }
    case 'Tile': {
      const reps = g.constValue(node.inputs[1]);
      if (!reps) throw new Error(`${where}: repeats must be a constant`);
      return one(x.dtype, x.shape.map((d, i) => (reps[i] === 1 ? d : typeof d === 'number' ? d * reps[i] : null)));
    }
    case 'Split': {
      const axis = normAxis((a.axis as number) ?? 0, x.shape.length);
      const sizes = node.inputs[1] ? g.constValue(node.inputs[1]) : undefined;
      return node.outputs.map((_, i) => {
        const out = [...x.shape];
        const d = x.shape[axis];
        out[axis] = sizes ? sizes[i] : typeof d === 'number' ? d / node.outputs.length : null;
        return { dtype: x.dtype, shape: out };
      });
    }
    case 'Gather': {
      const axis = normAxis((a.axis as number) ?? 0, x.shape.length);
      const idx = ins[1]!.shape;
      return one(x.dtype, [...x.shape.slice(0, axis), ...idx, ...x.shape.slice(axis + 1)]);
    }
    case 'GatherElements':
      return one(x.dtype, [...ins[1]!.shape]);
    case 'ScatterElements':
    case 'ScatterND':
      return one(x.dtype, [...x.shape]);
    case 'Where':
      return one(ins[1]!.dtype, broadcastShapes(ins.map((i) => i!.shape), where));
    case 'ConstantOfShape': {
      const target = g.shapeValue(node.inputs[0]);
      if (!target) throw new Error(`${where}: shape must be a constant or Shape(x)`);
      const value = a.value as { tensor: { dtype: DType } } | undefined;
      return one(value?.tensor.dtype ?? 'float32', target);
    }
    case 'SoftmaxCrossEntropyLoss': {
      const reduction = (a.reduction as string) ?? 'mean';
      const lossShape: Shape = reduction === 'none' ? [...ins[1]!.shape] : [];
      const infos: ValueInfo[] = [{ dtype: x.dtype, shape: lossShape }];
      if (node.outputs.length > 1) infos.push({ dtype: x.dtype, shape: [...x.shape] });
      return infos;
    }
    case 'Pad': {
      const pads = g.constValue(node.inputs[1]);
      if (!pads) throw new Error(`${where}: pads must be a constant`);
      const r = x.shape.length;
      return one(x.dtype, x.shape.map((d, i) => (typeof d === 'number' ? d + pads[i] + pads[i + r] : pads[i] + pads[i + r] === 0 ? d : null)));
    }
    case 'DequantizeLinear':
      // Output type: output_dtype when given (opset 21), else the scale's type.
      return one(a.output_dtype ? DTYPE_OF_ONNX[a.output_dtype as number] : ins[1]!.dtype, [...x.shape]);
    case 'MatMulNBits': {
      // com.microsoft: A [..., K] · dequant(B)ᵀ with B packed as [N, blocks, blob]; Y is [..., N].
      const k = x.shape[x.shape.length - 1];
      if (typeof k === 'number' && k !== a.K) throw new Error(`${where}: A has K=${k}, the node says K=${a.K}`);
      return one(x.dtype, [...x.shape.slice(0, -1), a.N as number]);
    }
    default:
      throw new Error(`${where}: the graph builder has no shape rule for ${node.op}`);
  }
}
