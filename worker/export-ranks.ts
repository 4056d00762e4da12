// Pipelined export: every rank writes the shards of final/ that hold its own blocks, from the tensors
// it trained and the base tensors of its range, one tensor at a time; rank 0 waits for all shards,
// adds the index, config and tokenizer, and moves the directory into place. No process holds the
// whole model. Ranks share output_dir (as they already do for checkpoints).
import fs from 'node:fs';
import path from 'node:path';
import { mergedTensors, writeMergedExtras } from '../model/hf/export.ts';
import type { LoraSpec } from '../model/llama/params.ts';
import type { BlockRange } from '../model/llama/range-graph.ts';
import { childLog } from '../common/log.ts';
import { parseShardSize, planShards, writeShardFiles, writeShardIndex } from '../model/hf/checkpoint.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import { trainedParts } from './export-run.ts';
import { ownsTensor } from './rank.ts';
import type { TrainingModel } from './training-model.ts';

const log = childLog({ component: 'export' });
const POLL_MS = 200;

export interface RankExport {
  run: RunConfig;
  model: TrainingModel;
  /** This rank's trained tensors. */
  values: ReadonlyMap<string, Float32Array>;
  lora: LoraSpec | null;
  partition: readonly BlockRange[];
  rank: number;
  step: number;
  /** How long rank 0 waits for the other ranks' shards. */
  timeoutMs?: number;
}

function stagingDir(run: RunConfig, step: number): string {
  return path.join(run.output_dir, `.final-staging-${step}`);
}

/** Writes this rank's shards; on rank 0 also finishes final/ once every shard is there. Returns final/ on rank 0. */
export async function exportRankShards(e: RankExport): Promise<string | null> {
  const parts = trainedParts(e.model, e.values, e.lora);
  const loraNames = e.lora ? [...e.lora.linears].flatMap((l) => [`${l}.lora_A.weight`, `${l}.lora_B.weight`]) : [];
  parts.trainedNames = new Set([...e.model.plan.everTrainable, ...loraNames]);
  const partOf = (name: string) => {
    const r = e.partition.findIndex((range) => ownsTensor(range, name));
    if (r < 0) throw new Error(`no rank owns ${name}`);
    return r;
  };
  const staging = stagingDir(e.run, e.step);
  fs.mkdirSync(staging, { recursive: true });
  const plan = planShards(staging, mergedTensors(parts), { maxShardBytes: parseShardSize(e.run.max_shard_size), partOf });
  const mine = writeShardFiles(staging, plan, undefined, e.rank);
  log.info({ rank: e.rank, shards: mine }, 'wrote this rank\'s shards of final/');
  if (e.rank !== 0) return null;

  const deadline = Date.now() + (e.timeoutMs ?? 30 * 60_000);
  for (;;) {
    const missing = plan.files.filter((f) => !fs.existsSync(path.join(staging, f.file)));
    if (missing.length === 0) break;
    if (Date.now() > deadline) {
      throw new Error(`rank ${missing[0].part} did not write ${missing[0].file} of final/ in time; its log says why. The trained tensors are in the last checkpoint: export them with 'propipe merge'`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  if (plan.files.length > 1) writeShardIndex(staging, plan);
  writeMergedExtras(staging, parts, e.run.model);
  const finalDir = path.resolve(e.run.output_dir, 'final');
  fs.rmSync(finalDir, { recursive: true, force: true });
  fs.renameSync(staging, finalDir);
  return finalDir;
}
