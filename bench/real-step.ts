// The training step the trainer runs, for the benchmark: the model is written as an HF checkpoint, the
// run is a RunConfig, and each step is the rank loop's own work — runStep over the schedule (one
// micro-batch), the step policy's clip decision, applyUpdate — on one rank, or on two ranks chained
// in memory (a frozen forward-only prefix and the trainable rest), as a pipeline would run them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeConfig } from '../model/hf/config.ts';
import type { Batch } from '../model/llama/program.ts';
import { wholeModel, type BlockRange } from '../model/llama/range-graph.ts';
import { writeCheckpoint } from '../model/hf/checkpoint.ts';
import { randomWeights } from '../model/hf/init.ts';
import type { InFrame, OutFrame } from '../proto/frames.ts';
import { parseRunConfig, type RunConfig } from '../recipe/run-config.ts';
import { StepPolicy } from '../recipe/step-policy.ts';
import { applyUpdate } from '../worker/assignment.ts';
import { runStep, type Links, type Span, type StepResult } from '../worker/executor.ts';
import { Mailbox } from '../worker/mailbox.ts';
import { Rank } from '../worker/rank.ts';
import { prepareModel } from '../worker/training-model.ts';
import type { ModelConfig } from '../model/hf/config.ts';

export interface RealStep {
  ranks: Rank[];
  run: RunConfig;
  /** One optimizer step; returns its loss and where the time went. */
  step(i: number, batch: Batch): Promise<{ loss: number; spans: Span[]; updateMs: number }>;
  release(): Promise<void>;
}

const inFrame = (f: OutFrame): InFrame => ({ ...f, labels: f.labels ?? null, inputIds: f.inputIds ?? null, positionIds: f.positionIds ?? null, teacher: f.teacher ?? null, stepTokens: f.stepTokens ?? 0, epoch: f.epoch ?? 0 });

/**
 * `base` (with `seed`'s random weights) trained as `trainType`; LLaMA Pro adds `newBlocks` on the fly.
 * `split` puts the blocks below the lowest trainable one on a rank of their own.
 */
export async function realStep(o: { base: ModelConfig; seed: number; trainType: 'full' | 'llamapro' | 'lora'; newBlocks: number; threads: number; split: boolean }): Promise<RealStep> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-'));
  writeConfig(dir, o.base);
  writeCheckpoint(dir, randomWeights(o.base, o.seed, 0.02));
  const run = parseRunConfig({ model: dir, dataset: path.join(dir, 'unused.jsonl'), output_dir: path.join(dir, 'out'), train_type: o.trainType, llamapro_new_blocks: o.trainType === 'llamapro' ? o.newBlocks : 0, ...(o.trainType === 'lora' ? { lora_rank: 8 } : {}), stage_order: 'none', learning_rate: 1e-4, learning_rate_bottom: 1e-4, warmup_ratio: 0, min_lr_ratio: 1, threads: o.threads }, 'bench run');
  const model = prepareModel(run);
  const L = model.config.numLayers;
  const lowest = Math.min(...model.plan.stages[0].layers);
  const partition: BlockRange[] = o.split && lowest > 0 ? [{ start: 0, end: lowest, embed: true, head: false }, { start: lowest, end: L, embed: false, head: true }] : [wholeModel(model.config)];
  const ranks = partition.map((_, r) => new Rank(run, model, r, partition));
  for (const r of ranks) await r.enterStage(0);
  const mailboxes = ranks.map(() => new Mailbox());
  const links: Links[] = ranks.map((_, r) => ({
    mailbox: mailboxes[r],
    up: r + 1 < ranks.length ? async (f) => mailboxes[r + 1].deliver(inFrame(f)) : undefined,
    down: r > 0 ? async (f) => mailboxes[r - 1].deliver(inFrame(f)) : undefined,
  }));
  const policy = new StepPolicy(run, 1, false);
  return {
    ranks,
    run,
    async step(i, batch) {
      const results: StepResult[] = [];
      // Ranks run in order: the prefix has no backward, so nothing flows down.
      for (const [r, rank] of ranks.entries()) results.push(await runStep(rank, '1f1b', i, 1, links[r], r === 0 ? [{ inputIds: batch.inputIds!, labels: batch.labels!, batch: batch.batch, seq: batch.seq }] : undefined));
      const last = results[results.length - 1];
      const t0 = performance.now();
      const d = policy.afterStep({ lossSum: last.lossSum, klSum: last.klSum, tokens: last.tokens, gradSqSum: results.reduce((s, x, r) => s + ranks[r].optimizer.gradSumOfSquares(x.grads.values()), 0), stageSteps: Number.MAX_SAFE_INTEGER, position: { epoch: 0, index: 0 } });
      ranks.forEach((rank, r) => applyUpdate(run, rank, results[r], d));
      return { loss: last.lossSum / last.tokens, spans: results.flatMap((x) => x.spans), updateMs: performance.now() - t0 };
    },
    async release() {
      for (const r of ranks) await r.release();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
