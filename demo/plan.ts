// The demo as data: the base model's shape, its pretraining on domain A, and the four fine-tuning
// methods on domain B, all with the same step budget so the table compares like with like.
import type { RunConfigInput } from '../recipe/run-config.ts';

export const DEMO_MODEL = { layers: 4, hidden: 64, heads: 4, kvHeads: 2, intermediate: 160, vocab: 512 } as const;

export interface DemoPaths {
  init: string;
  base: string;
  pretrain: string;
  bTrain: string;
  bValid: string;
}

export interface DemoMethod {
  name: string;
  label: string;
  config: (p: DemoPaths, out: string, seed: number) => RunConfigInput;
}

const BATCH = 16;
// LLaMA Pro's new blocks start as exact identities and need a larger step than full fine-tuning.
const PRO = { train_type: 'llamapro', llamapro_new_blocks: 2, learning_rate: 1e-2 } as const;

export function pretrainConfig(p: DemoPaths, out: string, seed: number, steps: number): RunConfigInput {
  return { model: p.init, dataset: p.pretrain, output_dir: out, train_type: 'full', stage_order: 'none', steps_per_stage: steps, learning_rate: 3e-3, learning_rate_bottom: 3e-3, warmup_ratio: 0.05, per_device_train_batch_size: BATCH, max_length: 64, logging_steps: 50, seed };
}

/** Fine-tuning methods compared by the demo; `steps` is the total budget of each. */
export function demoMethods(steps: number): DemoMethod[] {
  const common = (p: DemoPaths, out: string, seed: number) => ({ model: p.base, dataset: p.bTrain, val_dataset: p.bValid, output_dir: out, per_device_train_batch_size: BATCH, max_length: 64, logging_steps: 50, warmup_ratio: 0.05, seed });
  return [
    { name: 'full', label: 'full fine-tune', config: (p, o, s) => ({ ...common(p, o, s), train_type: 'full', stage_order: 'none', steps_per_stage: steps, learning_rate: 1e-3, learning_rate_bottom: 1e-3 }) },
    { name: 'lora', label: 'LoRA r=8', config: (p, o, s) => ({ ...common(p, o, s), train_type: 'lora', lora_rank: 8, lora_targets: 'all-linear', stage_order: 'none', steps_per_stage: steps, learning_rate: 3e-3, learning_rate_bottom: 3e-3 }) },
    { name: 'llamapro', label: 'LLaMA Pro +2 blocks', config: (p, o, s) => ({ ...common(p, o, s), ...PRO, stage_order: 'none', steps_per_stage: steps }) },
    { name: 'llamapro-distill', label: 'LLaMA Pro +2, distill 0.5', config: (p, o, s) => ({ ...common(p, o, s), ...PRO, stage_order: 'none', steps_per_stage: steps, distill_weight: 0.5 }) },
    { name: 'llamapro-staged', label: 'LLaMA Pro staged +LoRA r=4, distill 0.5', config: (p, o, s) => ({ ...common(p, o, s), ...PRO, stage_order: 'bottom-up', stage_mode: 'cumulative', steps_per_stage: steps / 2, lora_rank: 4, lora_targets: 'all-linear', distill_weight: 0.5 }) },
  ];
}
