// How the runtime holds memory TODAY, as named factors in one place. These are facts about propipe's
// process (Node + onnxruntime-node), measured with the real trainer (VmHWM from /proc/<pid>/status,
// `npm run bench:plan`), not about the model. When the runtime changes (issue 9: one shared copy of
// each frozen weight per process), change the numbers here and re-run `npm run bench:plan`.
//
// Why there are several copies of a frozen weight today:
//   - the loader returns a float32 copy per tensor (JS heap) that the graph holds until its sessions exist;
//   - every ONNX Runtime session copies the initializers it is given (external data is copied, not
//     mapped), and graph optimization adds constant-folded transposes (Wᵀ of every x·Wᵀ) and
//     prepacked MatMul weights, some of which outlive the originals;
//   - a rank has a forward session and, when it runs backward, a backward session over the same range.

export const RUNTIME = {
  /**
   * Bytes per frozen-weight byte held by a rank's forward session (the initializer, its constant-folded
   * transpose and MLAS's prepacked copy). Measured: 2.42 (hidden 512) and 2.32 (hidden 1024), 8 blocks.
   */
  forwardSessionCopies: 2.35,
  /** The backward session, for weights gradients cross (x·Wᵀ recomputed, and dY·W for the input gradient). Measured: 2.38, 2.37. */
  backwardCrossCopies: 2.4,
  /** The backward session, for weights below every trainable block (recompute only). Measured: 1.45. */
  backwardRecomputeCopies: 1.45,
  /**
   * The loader's float32 copy of each frozen weight, held by the graph while its sessions are built.
   * Measured: 0 at the process peak (a 254M-parameter LLaMA Pro run peaks at sessions + training state;
   * the copies are gone by the first step, whose activations and optimizer state set the peak).
   */
  loaderCopies: 0,
  /** Sessions hold the embedding table (read by Gather: nothing folded or prepacked) once each. */
  embeddingCopies: 1,
  /**
   * 0: the per-session copies above (the runtime before issue 9). N > 0: every frozen weight held N times
   * per process, shared by all its sessions. Since issue 9 frozen weights are graph inputs fed from one
   * buffer per process (model/llama/frozen.ts), so the runtime is 1; `propipe plan --weight-copies N`
   * shows what another figure changes.
   */
  sharedWeightCopies: 1,
  /** Resident bytes of a process before any model: Node, tsx, the CLI's modules, onnxruntime-node, gRPC/NATS clients (measured: 218–223 MiB for `train` on a 2-block toy). */
  processBytes: 220 * 2 ** 20,
  /**
   * ONNX Runtime's CPU arena over the backward graph's live peak (saved activations + transients, counted
   * from the graph): the BFC arena grows in power-of-two regions and a second run with a different
   * allocation order extends it again. Measured with a whole-model full fine-tune before issue 9: 2.1 (hidden
   * 256), 2.0 (512); re-fitted on `npm run bench:plan` after it (memory pattern off): 1.0.
   */
  backwardArenaFactor: 1.0,
  /**
   * Run outputs (gradients, activations) awaiting V8's collector: onnxruntime-node returns every output
   * as a fresh ArrayBuffer and V8 collects them only once about 64 MiB of them were allocated since its
   * last collection (its external-memory limit), so up to that much of the previous runs' outputs stays
   * resident beside the live ones. Counted as min(this, the bytes a step's runs return). Measured:
   * S full fine-tune, 2 micro-batches of 31.6 MB of gradients: JS ArrayBuffers peak at 4 gradient sets
   * (2 live), 3 with a forced collection after each step (bench/plan-profile.ts notes).
   */
  collectorSlackBytes: 64 * 2 ** 20,
  /** A forward run's working set, in multiples of its largest value. */
  forwardWorkingValues: 4,
} as const;

export type RuntimeFactors = { -readonly [K in keyof typeof RUNTIME]: number };

export const BYTES: Record<FrozenDtype, number> = { fp32: 4, bf16: 2, fp16: 2 };
export type FrozenDtype = 'fp32' | 'bf16' | 'fp16';
