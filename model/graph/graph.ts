// A small ONNX graph builder: values are named, every value carries its dtype and a (possibly symbolic)
// shape so that gradient rules can reason about broadcasting when the graph is built, not at run time.
import { type DType, type TypedData, isPacked4, typedFrom, toNumbers } from './dtype.ts';
import { inferOutputs } from './infer.ts';

/** A dimension: a number, a symbol shared by all values of the same size (e.g. 'batch'), or unknown. */
export type Dim = number | string | null;
export type Shape = Dim[];

export interface ValueInfo {
  dtype: DType;
  shape: Shape;
}

/** Plain numbers are INT attributes; floats are written `{ float }` so the two are never confused. */
export type AttrValue =
  | number
  | number[]
  | string
  | { float: number }
  | { floats: number[] }
  | { tensor: { dtype: DType; values: number[] } };

export interface Node {
  op: string;
  domain?: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
}

export interface Initializer {
  dtype: DType;
  dims: number[];
  data: TypedData;
}

export class Graph {
  readonly values = new Map<string, ValueInfo>();
  readonly nodes: Node[] = [];
  readonly inputs: string[] = [];
  readonly outputs: string[] = [];
  readonly initializers = new Map<string, Initializer>();
  private readonly producers = new Map<string, Node>();
  private counter = 0;

  constructor(readonly name = 'propipe') {}

  info(name: string): ValueInfo {
    const v = this.values.get(name);
    if (!v) throw new Error(`graph ${this.name}: no value named '${name}'`);
    return v;
  }

  fresh(hint: string): string {
    let name: string;
    do name = `${hint}_${this.counter++}`;
    while (this.values.has(name));
    return name;
  }

  input(name: string, dtype: DType, shape: Shape): string {
    this.define(name, { dtype, shape });
    this.inputs.push(name);
    return name;
  }

  initializer(name: string, dtype: DType, dims: number[], data: TypedData): string {
    const count = dims.reduce((a, b) => a * b, 1);
    // A 4-bit tensor's dims count elements while its bytes hold two of them each.
    const size = isPacked4(dtype) ? Math.ceil(count / 2) : count;
    if (data.length !== size) {
      throw new Error(`initializer '${name}': ${data.length} elements for shape [${dims}] (${size} expected)`);
    }
    this.define(name, { dtype, shape: [...dims] });
    this.initializers.set(name, { dtype, dims: [...dims], data });
    return name;
  }

  /** A small constant tensor (scalars, axes, shapes). */
  constant(values: readonly number[] | number, dtype: DType, dims?: number[]): string {
    const list = typeof values === 'number' ? [values] : values;
    const shape = dims ?? (typeof values === 'number' ? [] : [list.length]);
    return this.initializer(this.fresh('const'), dtype, shape, typedFrom(dtype, list));
  }

  i64(values: readonly number[]): string {
    return this.constant(values, 'int64', [values.length]);
  }

  /** A scalar of the same float type as `like`. */
  scalarLike(value: number, like: string): string {
    return this.constant(value, this.info(like).dtype);
  }

  /** The values of a constant initializer, or undefined when `name` is computed at run time. */
  constValue(name: string): number[] | undefined {
    const init = this.initializers.get(name);
    return init ? toNumbers(init.data) : undefined;
  }

  producer(name: string): Node | undefined {
    return this.producers.get(name);
  }

  /**
   * The static shape a shape-valued input stands for: a constant, or `Shape(x)` of a value whose
   * shape is known to the builder (how gradient rules restore an input's shape).
   */
  shapeValue(name: string): Shape | undefined {
    const c = this.constValue(name);
    if (c) return c;
    const p = this.producers.get(name);
    return p?.op === 'Shape' ? [...this.info(p.inputs[0]).shape] : undefined;
  }

  output(name: string): string {
    this.info(name);
    if (!this.outputs.includes(name)) this.outputs.push(name);
    return name;
  }

  /** Emits one node with a single output and returns the output's name. */
  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, domain?: string): string {
    return this.opN(op, inputs, 1, attrs, domain)[0];
  }

  opN(op: string, inputs: string[], nOut: number, attrs: Record<string, AttrValue> = {}, domain?: string): string[] {
    const outputs = Array.from({ length: nOut }, () => this.fresh(op.toLowerCase()));
    this.emit({ op, inputs, outputs, attrs, domain });
    return outputs;
  }

  /** Emits a node whose output names are chosen by the caller. */
  emit(node: Node): void {
    const infos = inferOutputs(this, node);
    node.outputs.forEach((name, i) => {
      this.define(name, infos[i]);
      this.producers.set(name, node);
    });
    this.nodes.push(node);
  }

  /** Renames a value by adding an Identity node, so that graph inputs/outputs get stable names. */
  rename(from: string, to: string): string {
    this.emit({ op: 'Identity', inputs: [from], outputs: [to], attrs: {} });
    return to;
  }

  clone(name = this.name): Graph {
    const g = new Graph(name);
    for (const [k, v] of this.values) g.values.set(k, { dtype: v.dtype, shape: [...v.shape] });
    for (const n of this.nodes) {
      const copy = { ...n, inputs: [...n.inputs], outputs: [...n.outputs], attrs: { ...n.attrs } };
      g.nodes.push(copy);
      for (const o of copy.outputs) g.producers.set(o, copy);
    }
    g.inputs.push(...this.inputs);
    g.outputs.push(...this.outputs);
    for (const [k, v] of this.initializers) g.initializers.set(k, v);
    g.counter = this.counter;
    return g;
  }

  private define(name: string, info: ValueInfo): void {
    if (this.values.has(name)) throw new Error(`graph ${this.name}: value '${name}' defined twice`);
    this.values.set(name, info);
  }
}
