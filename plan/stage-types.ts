// The types of the stage model (plan/stage-model.ts): what a run is for pricing, and what a rank costs.
import type { ModelConfig } from '../model/hf/config.ts';
import type { FrozenDtype, RuntimeFactors } from './runtime.ts';
import type { ScheduleKind } from '../recipe/schedule-kind.ts';

/** What a run is, for pricing: shapes and options, no tensor lists. */
export interface RunBasics {
  /** Config of the trained (possibly expanded) stack, and of the base model (the distillation teacher). */
  config: ModelConfig;
  base: ModelConfig;
  loraRank: number;
  /** 4-bit block size of frozen base linears, or null. */
  quantBlockSize: number | null;
  frozenDtype: FrozenDtype;
  batch: number;
  seq: number;
  microBatches: number;
  schedule: ScheduleKind;
  /** 1F1B's extra forwards in flight below the last rank (run config `pipeline_slack`; default 0). */
  slack?: number;
  distill: boolean;
  runtime?: RuntimeFactors;
  /** Ranks below the head back up from their first trainable block (ProgramOptions.stashPrefix, as workers run). Default true. */
  stashPrefix?: boolean;
  /** Ranks below the head keep their forward's activations instead of recomputing (`gradient_checkpointing: false`). */
  keepActivations?: boolean;
}

/** One stage of a run: the basics and which tensors train. */
export interface RunShape extends RunBasics {
  /** Tensors that receive gradients in this stage, in some stage, and in this or an earlier one. */
  trainable: readonly string[];
  everTrainable: readonly string[];
  trainedSoFar: readonly string[];
  /** Linear layers with LoRA adapters (full names). */
  loraLinears: readonly string[];
}

export interface MemoryBreakdown {
  frozenWeights: number;
  trainableWeights: number;
  gradients: number;
  optimizer: number;
  activations: number;
  teacher: number;
  runtime: number;
}

export interface RankEstimate {
  /** Seconds per micro-batch of the forward and backward runs (0 when the rank does not run them). */
  forwardSeconds: number;
  backwardSeconds: number;
  /** ZB-H1's split of the backward: input-gradient graph B and weight-gradient graph W, per micro-batch. */
  backwardInputSeconds: number;
  backwardWeightSeconds: number;
  /** Host seconds per step for this rank's trainable tensors: AdamW and the norm's sum of squares (the gradient sums run in each backward). */
  optimizerSeconds: number;
  trainableParams: number;
  memory: MemoryBreakdown;
  /** Memory that must fit the device (RSS on CPU, device memory on a GPU). */
  memoryBytes: number;
  /** Host memory of a GPU worker (JS copies, AdamW state); equal to memoryBytes on CPU. */
  hostBytes: number;
}
