// What a training run is, as one validated object. Keys follow the ms-swift / LLaMA-Factory
// vocabulary (snake_case in YAML, kebab-case as flags); every error names the field.
import fs from 'node:fs';
import YAML from 'yaml';
import { z } from 'zod';
import { evalTaskSchema } from './eval-tasks.ts';
import { resolveSwiftKeys } from './swift-args.ts';
import { closest } from './suggest.ts';
import { parseShardSize } from '../model/hf/checkpoint.ts';
import { childLog } from '../common/log.ts';

const log = childLog({ component: 'run-config' });

function isShardSize(s: string): boolean {
  try {
    return parseShardSize(s) > 0;
  } catch {
    return false;
  }
}

const positiveInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();

export const runConfigSchema = z
  .object({
    model: z.string().min(1),
    model_type: z.string().min(1).optional(),
    dataset: z.string().min(1),
    val_dataset: z.string().min(1).optional(),
    output_dir: z.string().min(1),

    train_type: z.enum(['full', 'lora', 'llamapro']).default('llamapro'),
    llamapro_new_blocks: nonNegInt.default(0),
    llamapro_groups: positiveInt.optional(),

    stage_order: z.string().default('bottom-up'),
    stage_mode: z.enum(['sliding', 'cumulative']).default('sliding'),
    blocks_per_group: positiveInt.optional(),
    stage_ratio: z.number().positive().max(1).optional(),
    train_head_last_stage: z.boolean().default(false),
    num_train_epochs: z.number().positive().default(1),
    epochs_per_stage: z.number().positive().optional(),
    steps_per_stage: positiveInt.optional(),
    max_steps: positiveInt.optional(),
    early_stop_patience: nonNegInt.default(0),
    early_stop_min_delta: z.number().nonnegative().default(0),

    learning_rate: z.number().positive().default(1e-4),
    learning_rate_bottom: z.number().positive().optional(),
    weight_decay: z.number().nonnegative().default(0),
    adam_beta1: z.number().min(0).max(1).default(0.9),
    adam_beta2: z.number().min(0).max(1).default(0.999),
    adam_epsilon: z.number().positive().default(1e-8),
    warmup_steps: nonNegInt.optional(),
    warmup_ratio: z.number().min(0).max(1).default(0.1),
    min_lr_ratio: z.number().min(0).max(1).default(0),
    max_grad_norm: z.number().nonnegative().default(1),

    per_device_train_batch_size: positiveInt.default(4),
    per_device_eval_batch_size: positiveInt.default(8),
    gradient_accumulation_steps: positiveInt.default(1),
    max_length: z.number().int().min(2).default(512),
    packing: z.boolean().default(false),
    gradient_checkpointing: z.boolean().default(true),
    wire_dtype: z.enum(['float32', 'bf16']).default('float32'),
    pipeline_slack: nonNegInt.default(1),

    lora_rank: nonNegInt.default(0),
    lora_alpha: z.number().positive().optional(),
    lora_targets: z.string().default('q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj'),

    quantize: z.enum(['none', '4bit']).default('none'),
    quant_block_size: positiveInt.default(32),
    frozen_dtype: z.enum(['auto', 'fp32', 'fp16', 'bf16']).default('auto'),
    max_shard_size: z.string().default('5GB').refine(isShardSize, { message: 'must be a size like 5GB, 500MB or a byte count' }),

    distill_weight: z.number().nonnegative().default(0),
    distill_temperature: z.number().positive().default(1),

    eval_tasks: z.array(evalTaskSchema).default([]),

    logging_steps: positiveInt.default(10),
    eval_steps: nonNegInt.default(0),
    save_steps: nonNegInt.default(0),
    save_total_limit: nonNegInt.default(0),
    seed: z.number().int().default(42),
    resume: z.boolean().default(false),
    device: z.enum(['cpu', 'cuda']).default('cpu'),
    threads: nonNegInt.default(0),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.train_type !== 'llamapro' && c.llamapro_new_blocks > 0) {
      ctx.addIssue({ code: 'custom', path: ['train_type'], message: `llamapro_new_blocks is set but train_type is ${c.train_type}` });
    }
    if (c.train_type === 'lora' && c.lora_rank === 0) {
      ctx.addIssue({ code: 'custom', path: ['lora_rank'], message: 'train_type lora needs lora_rank ≥ 1' });
    }
    if (c.quantize === '4bit' && c.train_type === 'full') {
      ctx.addIssue({ code: 'custom', path: ['quantize'], message: '4-bit quantization is for frozen weights: use train_type lora or llamapro' });
    }
  });

export type RunConfig = z.infer<typeof runConfigSchema>;
export type RunConfigInput = z.input<typeof runConfigSchema>;

export class RunConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RunConfigError';
  }
}

/** Flag name (kebab-case) → config key (snake_case). */
export function keyOfFlag(flag: string): string {
  return flag.replace(/-/g, '_');
}

export function parseRunConfig(input: unknown, source = 'config'): RunConfig {
  const r = runConfigSchema.safeParse(input);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => {
    const field = i.path.join('.') || '(top level)';
    const known = Object.keys(runConfigSchema.shape);
    const msg = i.code === 'unrecognized_keys' ? `unknown field(s) ${i.keys.map((k) => `'${k}'${closest(k, known) ? ` (did you mean '${closest(k, known)}'?)` : ''}`).join(', ')}` : i.message;
    return `  ${field}: ${msg}`;
  });
  throw new RunConfigError(`${source} is not a valid run config:\n${lines.join('\n')}`);
}

/** Reads a YAML (or JSON) run file; `overrides` (e.g. from flags) win over the file. */
export function loadRunConfig(file: string | undefined, overrides: Record<string, unknown>): RunConfig {
  let base: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new RunConfigError(`cannot read ${file}: ${(err as Error).message}`);
    }
    try {
      const parsed = YAML.parse(text) as unknown;
      if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) throw new Error('the top level must be a mapping of field: value');
      base = (parsed ?? {}) as Record<string, unknown>;
    } catch (err) {
      throw new RunConfigError(`${file}: ${(err as Error).message}`);
    }
  }
  const source = file ?? 'flags';
  let merged: Record<string, unknown>;
  try {
    merged = resolveSwiftKeys({ ...base, ...overrides });
  } catch (err) {
    throw new RunConfigError(`${source} is not a valid run config: ${(err as Error).message}`);
  }
  const run = parseRunConfig(merged, source);
  // ms-swift users pass both flags; say which one sets the group size rather than dropping one silently.
  if (run.stage_ratio !== undefined && run.blocks_per_group !== undefined) {
    log.warn({ stage_ratio: run.stage_ratio, blocks_per_group: run.blocks_per_group }, 'both stage_ratio and blocks_per_group (--llamapro_num_target_modules) are set: blocks_per_group sets the group size, stage_ratio is ignored');
  }
  return run;
}

export function loraAlpha(c: RunConfig): number {
  return c.lora_alpha ?? 2 * c.lora_rank;
}

export function bottomLearningRate(c: RunConfig): number {
  return c.learning_rate_bottom ?? c.learning_rate / 2;
}

/** One line of help per field: shown by `propipe train --help` and in the README. */
export const FIELD_HELP: Record<keyof RunConfig, string> = {
  model: 'base model directory (HF format); may be an expanded model with llama_pro.json',
  model_type: "checked against config.json's model_type (ms-swift names like llama3 or qwen2_5 match their family)",
  dataset: 'training JSONL (text, alpaca, chat or pre-tokenized records)',
  val_dataset: 'validation JSONL: evaluation and early stopping',
  output_dir: 'where checkpoints, metrics.jsonl, final/ and adapter/ go',
  train_type: 'full | lora | llamapro',
  llamapro_new_blocks: 'LLaMA Pro: new blocks to insert (expansion on the fly)',
  llamapro_groups: 'LLaMA Pro: groups the original blocks are split into (default: new blocks)',
  stage_order: 'bottom-up | top-down | none (one stage) | explicit group list like 2,0,1',
  stage_mode: 'sliding (one group per stage) | cumulative (groups stay trainable)',
  blocks_per_group: 'units (blocks, or new blocks in LLaMA Pro) per group (default: up to 4, at least 2 stages)',
  stage_ratio: 'units per group as a fraction of all trainable units, rounded, at least 1 (blocks_per_group overrides it)',
  train_head_last_stage: 'also train the final norm and lm_head in the last stage (lora, llamapro)',
  num_train_epochs: 'epochs of each stage when epochs_per_stage is not set',
  epochs_per_stage: 'epochs per stage',
  steps_per_stage: 'optimizer steps per stage (overrides epochs)',
  max_steps: 'stop the whole run after this many optimizer steps',
  early_stop_patience: 'end a stage when validation loss has not improved for N evaluations (0 = off)',
  early_stop_min_delta: 'improvement smaller than this does not count',
  learning_rate: 'learning rate of the top layer (and head)',
  learning_rate_bottom: 'learning rate of the bottom layer (and embedding), interpolated over depth (default: learning_rate/2)',
  weight_decay: 'AdamW decoupled weight decay (not on biases and norms)',
  adam_beta1: 'AdamW beta1',
  adam_beta2: 'AdamW beta2',
  adam_epsilon: 'AdamW epsilon',
  warmup_steps: 'warmup steps at the start of every stage (overrides warmup_ratio)',
  warmup_ratio: 'warmup as a fraction of each stage',
  min_lr_ratio: 'cosine decay floor as a fraction of the peak',
  max_grad_norm: 'global gradient-norm clipping over all trainable tensors (0 = off)',
  per_device_train_batch_size: 'examples per micro-batch',
  per_device_eval_batch_size: 'examples per evaluation batch',
  gradient_accumulation_steps: 'micro-batches per optimizer step (loss is the mean over all their tokens)',
  max_length: 'truncate examples to this many tokens',
  packing: 'pack several training examples into each max_length row (attention and positions stay within each example)',
  gradient_checkpointing: 'pipeline ranks below the head recompute their blocks in the backward (true) or keep the forward\'s activations per micro-batch in flight (false: no recompute, more memory)',
  wire_dtype: 'float32 | bf16: activations and gradients between pipeline ranks (bf16 halves the bytes, rounds each value)',
  pipeline_slack: '1F1B: forwards each rank but the last runs ahead beyond P − 1 − rank (0 = the textbook schedule; each costs one input frame in flight)',
  lora_rank: 'LoRA rank (0 = no LoRA); with llamapro, adapters go on the frozen original blocks',
  lora_alpha: 'LoRA alpha (default: 2 × rank)',
  lora_targets: 'comma-separated modules (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj) or all-linear',
  quantize: 'none | 4bit: store frozen base linear weights block-wise in 4 bits (QLoRA-style)',
  quant_block_size: 'block size of the 4-bit quantization',
  frozen_dtype: 'auto | fp32 | fp16 | bf16: precision of frozen weights in memory (auto = the checkpoint\'s; trainable tensors and AdamW state are float32)',
  max_shard_size: 'largest safetensors shard of output_dir/final, e.g. 5GB, 500MB (Hugging Face style)',
  distill_weight: 'weight of KL(teacher‖student) on logits, teacher = the unexpanded base model (0 = off)',
  distill_temperature: 'distillation temperature',
  eval_tasks: 'benchmarks scored on the final model: task=path[,task=path…] with task ceval, mmlu (CSV dirs/files) or mc (JSONL)',
  logging_steps: 'log every N steps (metrics.jsonl gets every step)',
  eval_steps: 'evaluate every N steps (0 = at stage ends only)',
  save_steps: 'checkpoint every N steps (0 = none)',
  save_total_limit: 'keep the newest N checkpoints (0 = all)',
  seed: 'seed of data order and adapter init',
  resume: 'continue from the newest committed checkpoint in output_dir',
  device: 'cpu | cuda',
  threads: 'intra-op threads per ORT session (0 = all cores)',
};
