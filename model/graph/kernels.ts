// Which fused kernels and layouts the Llama graphs and their gradient rules are built with. Every lever is on by default; a
// benchmark turns one off at a time to measure what it buys (bench/train-levers.ts), which is why
// the unfused forms stay buildable. Graph building is synchronous, so a choice holds for exactly the
// graphs built inside `withKernelChoices`.
export interface KernelChoices {
  /** RMSNorm as ONNX Runtime's SimplifiedLayerNormalization with its own gradient rule; else six standard ops. */
  fusedRmsNorm: boolean;
  /** The query heads of a kv group stacked as GEMM rows; else a 5-D MatMul broadcast over the group. */
  stackedGqa: boolean;
  /** A linear layer's weight gradient computed in W's own layout (no transpose of dW). */
  weightGradLayout: boolean;
  /**
   * The loss over every position against labels shifted left (the last one ignored), and its gradient
   * from the loss kernel's log-probabilities; else the logits sliced to t − 1 positions and a softmax
   * and one-hot rebuilt in the gradient.
   */
  shiftedLabels: boolean;
  /** Rotary embeddings as ONNX Runtime's RotaryEmbedding kernel (its gradient is the same kernel rotating back). */
  fusedRope: boolean;
  /**
   * Blocks no gradient passes through (forward-only ranges, a frozen prefix) run attention as ONNX
   * Runtime's GroupQueryAttention, rotary embedding included, on [b, t, heads·d]: no head transposes,
   * no score tensor.
   */
  fusedAttention: boolean;
}

const DEFAULTS: KernelChoices = { fusedRmsNorm: true, stackedGqa: true, weightGradLayout: true, shiftedLabels: true, fusedRope: true, fusedAttention: true };
let current: KernelChoices = { ...DEFAULTS };

export function kernelChoices(): Readonly<KernelChoices> {
  return current;
}

/** Builds graphs inside `build` with some levers changed; the previous choices come back afterwards. */
export function withKernelChoices<T>(choices: Partial<KernelChoices>, build: () => T): T {
  const saved = current;
  current = { ...saved, ...choices };
  try {
    return build();
  } finally {
    current = saved;
  }
}

export const KERNEL_LEVERS = Object.keys(DEFAULTS) as (keyof KernelChoices)[];
