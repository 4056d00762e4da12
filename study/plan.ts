// The study as data: the base model, the methods compared, their learning-rate grids, the ablations of
// the seed's advice, and the budgets. Every method trains on the same number of tokens of domain B
// (early stopping may end a staged run sooner: that is part of the method and is reported).
import type { RunConfigInput } from '../recipe/run-config.ts';

/** Big enough that groups of blocks form several stages: 8 original blocks, 4 LLaMA Pro blocks. */
export const STUDY_MODEL = { layers: 8, hidden: 64, heads: 4, kvHeads: 2, intermediate: 160, vocab: 512 } as const;
export const NEW_BLOCKS = 4;
const BATCH = 16;
const MAX_LENGTH = 64;

export interface Budget {
  /** Optimizer steps of pretraining on domain A. */
  pretrainSteps: number;
  /** Records of domain B's training set (one epoch = records / 16 steps). */
  bTrain: number;
  /** Epochs of B every method trains for. */
  epochs: number;
  /** Learning rates tried per method (×, around the family's centre). */
  lrFactors: number[];
  /** Run the ablations of the seed's advice too. */
  ablations: boolean;
}

export const BUDGETS: Record<'tiny' | 'small' | 'medium', Budget> = {
  tiny: { pretrainSteps: 60, bTrain: 64, epochs: 2, lrFactors: [1], ablations: false },
  small: { pretrainSteps: 500, bTrain: 960, epochs: 2, lrFactors: [1 / 3, 1, 3], ablations: true },
  medium: { pretrainSteps: 1000, bTrain: 1920, epochs: 3, lrFactors: [1 / 3, 1, 3], ablations: true },
};

/** What every fine-tuning run shares; `steps` is the whole budget in optimizer steps. */
export interface RunBase {
  model: string;
  dataset: string;
  val_dataset: string;
  output_dir: string;
  seed: number;
  threads: number;
}

/** The knobs the seed's advice sets, and the ablations vary. */
export interface Advice {
  /** New blocks unfrozen per stage (groups of units). */
  blocksPerGroup: number;
  /** null: the stages split the common budget (so staged runs train on as many tokens as the rest). */
  epochsPerStage: number | null;
  /** Learning rate of the top layer ÷ the bottom layer's. */
  lrRatio: number;
  patience: number;
}

export const SEED_ADVICE: Advice = { blocksPerGroup: 2, epochsPerStage: null, lrRatio: 2, patience: 2 };

export interface StudyMethod {
  name: string;
  label: string;
  /** Centre of the learning-rate grid. */
  lr: number;
  config(base: RunBase, lr: number, budget: Budget, advice: Advice): RunConfigInput;
}

const stepsPerEpoch = (b: Budget) => Math.ceil(b.bTrain / BATCH);
const common = (base: RunBase) => ({ ...base, per_device_train_batch_size: BATCH, max_length: MAX_LENGTH, logging_steps: 50, warmup_ratio: 0.05 });
/** A flat learning rate and one stage of the whole budget: how the baselines are run. */
const atOnce = (base: RunBase, lr: number, b: Budget) => ({ ...common(base), stage_order: 'none', steps_per_stage: b.epochs * stepsPerEpoch(b), learning_rate: lr, learning_rate_bottom: lr });
const pro = { train_type: 'llamapro', llamapro_new_blocks: NEW_BLOCKS, llamapro_groups: NEW_BLOCKS } as const;

/** Staged LLaMA Pro as the seed advises: groups of new blocks, a stage each, layer-wise LR, early stop. */
function staged(base: RunBase, lr: number, b: Budget, a: Advice, order: 'bottom-up' | 'top-down'): RunConfigInput {
  const stages = Math.ceil(NEW_BLOCKS / a.blocksPerGroup);
  const stageSteps = Math.max(1, Math.round((a.epochsPerStage ?? b.epochs / stages) * stepsPerEpoch(b)));
  return {
    ...common(base),
    ...pro,
    stage_order: order,
    blocks_per_group: a.blocksPerGroup,
    steps_per_stage: stageSteps,
    learning_rate: lr,
    learning_rate_bottom: lr / a.lrRatio,
    early_stop_patience: a.patience,
    eval_steps: Math.max(1, Math.round(stageSteps / 6)),
  };
}

export const METHODS: StudyMethod[] = [
  { name: 'full', label: 'full fine-tune', lr: 1e-3, config: (base, lr, b) => ({ ...atOnce(base, lr, b), train_type: 'full' }) },
  { name: 'lora', label: 'LoRA r=8', lr: 3e-3, config: (base, lr, b) => ({ ...atOnce(base, lr, b), train_type: 'lora', lora_rank: 8, lora_targets: 'all-linear' }) },
  { name: 'pro', label: `LLaMA Pro +${NEW_BLOCKS} at once`, lr: 1e-2, config: (base, lr, b) => ({ ...atOnce(base, lr, b), ...pro }) },
  { name: 'pro-staged', label: 'LLaMA Pro staged bottom-up (seed defaults)', lr: 1e-2, config: (base, lr, b, a) => staged(base, lr, b, a, 'bottom-up') },
  { name: 'pro-topdown', label: 'LLaMA Pro staged top-down', lr: 1e-2, config: (base, lr, b, a) => staged(base, lr, b, a, 'top-down') },
  { name: 'pro-lora', label: 'staged + LoRA r=4 on frozen blocks', lr: 1e-2, config: (base, lr, b, a) => ({ ...staged(base, lr, b, a, 'bottom-up'), lora_rank: 4, lora_targets: 'all-linear' }) },
  { name: 'pro-distill', label: 'staged + distillation 0.5', lr: 1e-2, config: (base, lr, b, a) => ({ ...staged(base, lr, b, a, 'bottom-up'), distill_weight: 0.5 }) },
  { name: 'qlora-pro', label: 'QLoRA (4-bit base, LoRA r=4) + LLaMA Pro', lr: 1e-2, config: (base, lr, b) => ({ ...atOnce(base, lr, b), ...pro, lora_rank: 4, lora_targets: 'all-linear', quantize: '4bit', quant_block_size: 16 }) },
];

export interface Ablation {
  knob: keyof Advice;
  label: string;
  values: number[];
}

export const ABLATIONS: Ablation[] = [
  { knob: 'blocksPerGroup', label: 'new blocks per group (stages = 4 / group)', values: [1, 2, 4] },
  { knob: 'epochsPerStage', label: 'epochs per stage', values: [1, 2, 3] },
  { knob: 'lrRatio', label: 'LR ratio top:bottom', values: [1, 2, 4] },
  { knob: 'patience', label: 'early-stop patience', values: [1, 2, 4] },
];

/** The method the ablations vary: staged bottom-up LLaMA Pro. */
export const ABLATED = 'pro-staged';

export function pretrainRun(model: string, dataset: string, out: string, seed: number, steps: number, threads: number): RunConfigInput {
  return { model, dataset, output_dir: out, train_type: 'full', stage_order: 'none', steps_per_stage: steps, learning_rate: 3e-3, learning_rate_bottom: 3e-3, warmup_ratio: 0.05, per_device_train_batch_size: BATCH, max_length: MAX_LENGTH, logging_steps: 100, seed, threads };
}
