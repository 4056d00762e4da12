// Decides, per parameter, how the graph sees it: a trainable input, a frozen float input or initializer,
// or a frozen 4-bit weight; and which linear layers carry LoRA adapters.
import type { HostTensor } from '../graph/dtype.ts';
import type { Graph } from '../graph/graph.ts';
import type { FrozenSource } from './frozen.ts';

export type WeightLoader = (name: string) => Float32Array;

export interface LoraSpec {
  rank: number;
  alpha: number;
  /** Full names of the linear layers that carry an adapter, e.g. model.layers.3.self_attn.q_proj. */
  linears: ReadonlySet<string>;
  /**
   * Serving: the factors of several adapters stacked along the rank, and a [batch, 1, rank] input
   * (LORA_ROW_MASK) that keeps each row's own slice, so rows of different adapters share a batch.
   */
  rowMask?: boolean;
}

export const LORA_ROW_MASK = 'lora_row_mask';

/** Frozen linear weights stored in 4 bits (model/quant/quant4-store.ts). */
export interface QuantizedMatMul {
  /**
   * Emits y = x·Wqᵀ for the frozen weight `name` (W [out, in], HF layout), where x is [..., in], or
   * returns null to keep `name` float. It owns the whole product rather than handing back a float Wᵀ
   * so that it can use a fused 4-bit kernel (MatMulNBits); the ops it emits must carry a gradient to
   * x. They read the graph inputs listed in `inputs`, which programs feed from `tensor`.
   */
  matmul(g: Graph, x: string, name: string, out: number, inp: number): { y: string; inputs: readonly string[] } | null;
  /** The host tensor behind one of those inputs: one buffer per process, fed to every session. */
  tensor(input: string): HostTensor;
}

export interface BinderOptions {
  trainable: ReadonlySet<string>;
  load: WeightLoader;
  /**
   * Frozen tensors become graph inputs fed from this source (one buffer shared by every session);
   * without it they are initializers, which each session copies.
   */
  frozen?: FrozenSource | null;
  lora?: LoraSpec | null;
  /** Frozen linear weights stored in 4 bits; every other frozen weight stays float. */
  quantized?: QuantizedMatMul | null;
}

export function loraNames(linearName: string): { a: string; b: string } {
  return { a: `${linearName}.lora_A.weight`, b: `${linearName}.lora_B.weight` };
}

export class ParamBinder {
  private readonly bound = new Map<string, string>();
  /** Frozen half-precision inputs, before their Cast to float32. */
  private readonly stored = new Map<string, string>();
  /** Frozen tensors bound as graph inputs, to be fed from the frozen source. */
  readonly frozenInputs: string[] = [];
  /** Graph inputs of 4-bit weights, to be fed from `quantized.tensor`. */
  readonly quantizedInputs = new Set<string>();
  /** Every parameter bound as a graph value, with its shape, in first-use order. */
  readonly shapes = new Map<string, number[]>();

  constructor(private readonly o: BinderOptions) {}

  /** Frozen inputs held in half precision (each upcast inside the graph). */
  get halfInputs(): ReadonlySet<string> {
    return new Set(this.stored.keys());
  }

  get used(): string[] {
    return [...this.shapes.keys()];
  }

  isTrainable(name: string): boolean {
    return this.o.trainable.has(name);
  }

  /** The graph value for parameter `name`, created on first use (tied weights bind once). */
  get(g: Graph, name: string, shape: number[]): string {
    const existing = this.bound.get(name);
    if (existing) return existing;
    let value: string;
    if (this.o.trainable.has(name)) value = g.input(name, 'float32', shape);
    else if (this.o.frozen) {
      const t = this.o.frozen.tensor(name);
      if (t.shape.join() !== shape.join()) throw new Error(`weight ${name}: shape [${t.shape}], expected [${shape}]`);
      value = g.input(name, t.dtype, shape);
      this.frozenInputs.push(name);
      if (t.dtype !== 'float32') {
        this.stored.set(name, value);
        value = g.op('Cast', [value], { to: 1 });
      }
    } else {
      const data = this.o.load(name);
      const size = shape.reduce((a, b) => a * b, 1);
      if (data.length !== size) throw new Error(`weight ${name}: ${data.length} values, expected shape [${shape}]`);
      value = g.initializer(name, 'float32', shape, data);
    }
    this.bound.set(name, value);
    this.shapes.set(name, shape);
    return value;
  }

  /** Rows `ids` of the [rows, cols] parameter `name` (an embedding), gathered before any upcast. */
  gatherRows(g: Graph, name: string, shape: number[], ids: string): string {
    const value = this.get(g, name, shape);
    const stored = this.stored.get(name);
    return stored ? g.op('Cast', [g.op('Gather', [stored, ids], { axis: 0 })], { to: 1 }) : g.op('Gather', [value, ids], { axis: 0 });
  }

  /** x·Wᵀ for a linear layer's weight W ([out, in], HF layout); a 4-bit product when W is frozen and quantized. */
  matmulWT(g: Graph, x: string, name: string, out: number, inp: number): string {
    const weight = `${name}.weight`;
    if (this.o.quantized && !this.o.trainable.has(weight)) {
      const q = this.o.quantized.matmul(g, x, weight, out, inp);
      if (q) {
        for (const n of q.inputs) this.quantizedInputs.add(n);
        return q.y;
      }
    }
    return g.op('MatMul', [x, g.op('Transpose', [this.get(g, weight, [out, inp])], { perm: [1, 0] })]);
  }

  /** The per-row rank mask when the LoRA factors are stacked for serving (created on first use). */
  loraRowMask(g: Graph): string | null {
    const l = this.o.lora;
    if (!l?.rowMask) return null;
    if (!g.values.has(LORA_ROW_MASK)) g.input(LORA_ROW_MASK, 'float32', ['batch', 1, l.rank]);
    return LORA_ROW_MASK;
  }

  /** The LoRA adapter of a linear layer, if its module is targeted. */
  lora(name: string): { rank: number; scale: number } | null {
    const l = this.o.lora;
    return l && l.linears.has(name) ? { rank: l.rank, scale: l.alpha / l.rank } : null;
  }
}
