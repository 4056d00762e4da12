// The KV cache of a running batch: per layer one key and one value tensor [rows, kv_heads, T, head_dim].
// Rows hold different lengths; each row's tokens sit right-aligned (its newest token in slot T-1) and
// the slots before are padding the mask hides. Rows join and leave between decode steps: only then is
// the cache repacked (and trimmed to the longest row), a decode step itself just takes the graph's
// present tensors as the next past.

export interface LayerKv {
  key: Float32Array;
  value: Float32Array;
}

/** One row's place in a cache: which row of which tensors, and how many valid (right-aligned) slots. */
interface RowSource {
  layers: readonly LayerKv[];
  row: number;
  slots: number;
  len: number;
}

export class KvBatch {
  /** Slots per row, padding included. */
  slots = 0;
  /** Valid tokens per row (= the position of the row's next token). */
  lens: number[] = [];
  layers: LayerKv[];

  constructor(
    readonly numLayers: number,
    /** kv_heads × head_dim. */
    private readonly width: number,
    private readonly headDim: number,
  ) {
    this.layers = Array.from({ length: numLayers }, () => ({ key: new Float32Array(0), value: new Float32Array(0) }));
  }

  get rows(): number {
    return this.lens.length;
  }

  /** After a step that added `t` tokens to every row: the graph's present tensors are the new cache. */
  advance(present: LayerKv[], t: number): void {
    this.layers = present;
    this.slots += t;
    this.lens = this.lens.map((l) => l + t);
  }

  /** Adds `copies` rows holding the single-row cache `from` (a prefill's present tensors). */
  addRows(from: readonly LayerKv[], len: number, copies: number): void {
    const sources = this.keep(this.lens.map((_, r) => r));
    for (let c = 0; c < copies; c++) sources.push({ layers: from, row: 0, slots: len, len });
    this.repack(sources);
  }

  /** Drops the rows at `indices` (finished or cancelled). */
  removeRows(indices: ReadonlySet<number>): void {
    if (indices.size === 0) return;
    this.repack(this.keep(this.lens.map((_, r) => r).filter((r) => !indices.has(r))));
  }

  private keep(rows: number[]): RowSource[] {
    return rows.map((row) => ({ layers: this.layers, row, slots: this.slots, len: this.lens[row] }));
  }

  private repack(sources: RowSource[]): void {
    const slots = Math.max(0, ...sources.map((s) => s.len));
    const w = this.width;
    const d = this.headDim;
    const heads = w / d;
    this.layers = this.layers.map((_, l) => {
      const key = new Float32Array(sources.length * w * slots);
      const value = new Float32Array(sources.length * w * slots);
      sources.forEach((s, r) => {
        for (let hd = 0; hd < heads; hd++) {
          const from = ((s.row * heads + hd) * s.slots + (s.slots - s.len)) * d;
          const to = ((r * heads + hd) * slots + (slots - s.len)) * d;
          key.set(s.layers[l].key.subarray(from, from + s.len * d), to);
          value.set(s.layers[l].value.subarray(from, from + s.len * d), to);
        }
      });
      return { key, value };
    });
    this.slots = slots;
    this.lens = sources.map((s) => s.len);
  }
}
