// Decides, per HF parameter, whether the graph sees it as a trainable input or a frozen initializer.
import type { Graph } from '../graph/graph.ts';

export type WeightLoader = (name: string) => Float32Array;

export class ParamBinder {
  private readonly bound = new Map<string, string>();
  readonly used: string[] = [];

  constructor(
    private readonly trainable: ReadonlySet<string>,
    private readonly load: WeightLoader,
  ) {}

  /** The graph value for parameter `name`, created on first use (tied weights bind once). */
  get(g: Graph, name: string, shape: number[]): string {
    const existing = this.bound.get(name);
    if (existing) return existing;
    let value: string;
    if (this.trainable.has(name)) value = g.input(name, 'float32', shape);
    else {
      const data = this.load(name);
      const size = shape.reduce((a, b) => a * b, 1);
      if (data.length !== size) throw new Error(`weight ${name}: ${data.length} values, expected shape [${shape}]`);
      value = g.initializer(name, 'float32', shape, data);
    }
    this.bound.set(name, value);
    this.used.push(name);
    return value;
  }

  isTrainable(name: string): boolean {
    return this.trainable.has(name);
  }
}
