// A rank's checkpoint shard: its trainable tensors and their AdamW moments in one safetensors file.
// The local trainer is a one-rank pipeline: it writes its shard and commits right away.
import fs from 'node:fs';
import path from 'node:path';
import type { AdamW, MomentState } from '../model/train/adamw.ts';
import { openSafetensors } from '../model/hf/safetensors-read.ts';
import { writeSafetensors, type TensorToWrite } from '../model/hf/safetensors-write.ts';
import { commitCheckpoint, latestManifest, partialDir, shardEntry, type Manifest, type ShardEntry, type TrainerState } from '../recipe/checkpoints.ts';

export type { TrainerState };

export interface LoadedCheckpoint {
  dir: string;
  manifest: Manifest;
  params: Map<string, Float32Array>;
  moments: Map<string, MomentState>;
}

export function shardFile(outputDir: string, step: number, rank: number): string {
  return path.join(partialDir(outputDir, step), `shard-${String(rank).padStart(5, '0')}.safetensors`);
}

export function writeShard(file: string, params: ReadonlyMap<string, Float32Array>, optimizer: AdamW, shapes: ReadonlyMap<string, number[]>): ShardEntry {
  const tensors: TensorToWrite[] = [];
  const steps: Record<string, number> = {};
  for (const [name, data] of params) {
    const shape = shapes.get(name)!;
    tensors.push({ name: `param.${name}`, dtype: 'F32', shape, data });
    const s = optimizer.state.get(name);
    if (s) {
      tensors.push({ name: `exp_avg.${name}`, dtype: 'F32', shape, data: s.m });
      tensors.push({ name: `exp_avg_sq.${name}`, dtype: 'F32', shape, data: s.v });
      steps[name] = s.t;
    }
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeSafetensors(file, tensors, { adam_steps: JSON.stringify(steps) });
  return shardEntry(file);
}

/** Reads the tensors `keep` selects from every shard of a committed checkpoint (re-sharding by name). */
export function readShards(dir: string, manifest: Manifest, keep: (name: string) => boolean = () => true): LoadedCheckpoint {
  const params = new Map<string, Float32Array>();
  const moments = new Map<string, MomentState>();
  for (const s of manifest.shards) {
    const f = openSafetensors(path.join(dir, s.file));
    const steps = JSON.parse(f.metadata?.adam_steps ?? '{}') as Record<string, number>;
    for (const n of f.names()) if (n.startsWith('param.') && keep(n.slice(6))) params.set(n.slice(6), f.readF32(n));
    for (const [name, t] of Object.entries(steps)) if (keep(name)) moments.set(name, { m: f.readF32(`exp_avg.${name}`), v: f.readF32(`exp_avg_sq.${name}`), t });
    f.close();
  }
  return { dir, manifest, params, moments };
}

export function saveCheckpoint(outputDir: string, state: TrainerState, params: ReadonlyMap<string, Float32Array>, optimizer: AdamW, shapes: ReadonlyMap<string, number[]>, run: Record<string, unknown>, keep: number): string {
  const partial = partialDir(outputDir, state.step);
  fs.rmSync(partial, { recursive: true, force: true });
  const shard = writeShard(shardFile(outputDir, state.step, 0), params, optimizer, shapes);
  return commitCheckpoint(outputDir, state.step, state, [shard], run, keep);
}

export function latestCheckpoint(outputDir: string): LoadedCheckpoint | null {
  const found = latestManifest(outputDir);
  return found ? readShards(found.dir, found.manifest) : null;
}
