// From a run config and a model's config.json (no weights) to the plain data the model prices.
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, parseConfig, type ModelConfig } from '../model/hf/config.ts';
import { readExpansionSidecar } from '../model/expand/sidecar.ts';
import { trainedStack, type TrainedStack } from '../recipe/layout.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import type { DeviceProfile } from './devices.ts';
import type { RunRequest } from './estimate.ts';
import type { FrozenDtype, RuntimeFactors } from './runtime.ts';
import type { ScheduleKind } from '../recipe/schedule-kind.ts';

/** `--model` may name a model directory or its config.json. */
export function readModelConfig(model: string): { dir: string; config: ModelConfig; raw: Record<string, unknown> } {
  if (fs.existsSync(model) && fs.statSync(model).isFile()) {
    let raw: unknown;
    try {
      raw = JSON.parse(fs.readFileSync(model, 'utf8'));
    } catch (err) {
      throw new Error(`${model}: invalid JSON (${(err as Error).message}); pass a Hugging Face config.json or its directory`);
    }
    return { dir: path.dirname(model), ...parseConfig(raw, model) };
  }
  return { dir: model, ...loadConfig(model) };
}

export interface PlanOptions {
  device: DeviceProfile;
  workers: number;
  microBatches: number;
  schedule: ScheduleKind;
  frozenDtype: FrozenDtype;
  runtime?: RuntimeFactors;
}

export function runRequest(run: RunConfig, o: PlanOptions): RunRequest {
  const m = readModelConfig(run.model);
  const stack = trainedStack({ ...run, model: m.dir }, m.config, m.raw, readExpansionSidecar(m.dir));
  return requestFromStack(run, stack, m.config, o);
}

/** The request of a run whose stack is already built (the coordinator's). */
export function requestFromStack(run: RunConfig, stack: TrainedStack, base: ModelConfig, o: PlanOptions): RunRequest {
  return {
    config: stack.config,
    base,
    stages: stack.plan,
    loraRank: run.lora_rank,
    quantBlockSize: run.quantize === '4bit' ? run.quant_block_size : null,
    frozenDtype: o.frozenDtype,
    batch: run.per_device_train_batch_size,
    seq: run.max_length,
    microBatches: o.microBatches,
    schedule: o.schedule,
    slack: run.pipeline_slack,
    keepActivations: !run.gradient_checkpointing,
    distill: run.distill_weight > 0,
    device: o.device,
    workers: o.workers,
    runtime: o.runtime,
  };
}

/** The run's frozen_dtype as the workers hold it: 'auto' keeps the checkpoint's half precision. */
export function resolveFrozenDtype(d: RunConfig['frozen_dtype'], raw: Record<string, unknown>): FrozenDtype {
  if (d !== 'auto') return d;
  return raw.torch_dtype === 'bfloat16' ? 'bf16' : raw.torch_dtype === 'float16' ? 'fp16' : 'fp32';
}
