// Graph -> ONNX ModelProto bytes. Large initializers travel as in-memory external data so that no
// protobuf approaches the 2 GB limit and weight buffers are handed to ONNX Runtime without re-encoding.
import onnxProto from 'onnx-proto';
import { ONNX_DTYPE, type DType } from './dtype.ts';
import type { AttrValue, Graph, Node, Shape } from './graph.ts';

const { onnx } = onnxProto;

export const OPSET = 21;
const IR_VERSION = 10;
const EXTERNAL_THRESHOLD_BYTES = 4096;

export interface SerializedModel {
  bytes: Uint8Array;
  externalData: { path: string; data: Uint8Array }[];
}

function valueInfo(name: string, dtype: DType, shape: Shape) {
  return {
    name,
    type: {
      tensorType: {
        elemType: ONNX_DTYPE[dtype],
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : d === null ? {} : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, v: AttrValue) {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') return { name, type: T.INT, i: v };
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if ('float' in v) return { name, type: T.FLOAT, f: v.float };
  if ('floats' in v) return { name, type: T.FLOATS, floats: v.floats };
  const { dtype, values } = v.tensor;
  const data = dtype === 'float32' ? { floatData: values } : dtype === 'float64' ? { doubleData: values } : { int64Data: values };
  return { name, type: T.TENSOR, t: { dims: [values.length], dataType: ONNX_DTYPE[dtype], ...data } };
}

function bytesOf(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Keeps only the nodes that the graph outputs depend on (a backward graph recomputes just what it needs). */
export function liveNodes(g: Graph): Node[] {
  const needed = new Set(g.outputs);
  const live: Node[] = [];
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i];
    if (!n.outputs.some((o) => needed.has(o))) continue;
    live.push(n);
    for (const inp of n.inputs) if (inp) needed.add(inp);
  }
  return live.reverse();
}

export function serialize(g: Graph): SerializedModel {
  const nodes = liveNodes(g);
  const used = new Set<string>(g.outputs);
  for (const n of nodes) for (const i of n.inputs) used.add(i);
  const externalData: SerializedModel['externalData'] = [];
  const initializer = [];
  for (const [name, init] of g.initializers) {
    if (!used.has(name)) continue;
    const raw = bytesOf(init.data);
    const base = { name, dims: init.dims, dataType: ONNX_DTYPE[init.dtype] };
    if (raw.byteLength >= EXTERNAL_THRESHOLD_BYTES) {
      const path = `w${externalData.length}.bin`;
      externalData.push({ path, data: raw });
      initializer.push({
        ...base,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: path },
          { key: 'offset', value: '0' },
          { key: 'length', value: String(raw.byteLength) },
        ],
      });
    } else {
      initializer.push({ ...base, rawData: raw });
    }
  }
  const model = {
    irVersion: IR_VERSION,
    producerName: 'propipe',
    opsetImport: [
      { domain: '', version: OPSET },
      { domain: 'com.microsoft', version: 1 },
    ],
    graph: {
      name: g.name,
      node: nodes.map((n, k) => ({
        name: `n${k}_${n.op}`,
        opType: n.op,
        domain: n.domain ?? '',
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attrs).map(([k2, v]) => attribute(k2, v)),
      })),
      input: g.inputs.filter((i) => used.has(i)).map((i) => valueInfo(i, g.info(i).dtype, g.info(i).shape)),
      output: g.outputs.map((o) => valueInfo(o, g.info(o).dtype, g.info(o).shape)),
      initializer,
    },
  };
  const bytes = onnx.ModelProto.encode(onnx.ModelProto.fromObject(model)).finish();
  return { bytes, externalData };
}
