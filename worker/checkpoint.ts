// Training checkpoints: trainable tensors and optimizer moments in a safetensors shard, and a manifest
// written last that lists every shard with its size and SHA-256. A directory without a valid manifest
// is never resumed from; each checkpoint is built under a temporary name and renamed into place.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { AdamW } from '../model/adamw.ts';
import { log } from '../model/log.ts';
import { openSafetensors, writeFileAtomic, writeSafetensors, type TensorToWrite } from '../model/safetensors.ts';
import type { EarlyStopState } from '../recipe/early-stop.ts';

const FORMAT = 'propipe-checkpoint-1';
const MANIFEST = 'manifest.json';
const PREFIX = 'checkpoint-';

export interface TrainerState {
  /** Optimizer steps taken so far. */
  step: number;
  stage: number;
  /** Steps taken within the current stage. */
  stageStep: number;
  /** The next batch of the current stage's data stream. */
  position: { epoch: number; index: number };
  earlyStop: EarlyStopState;
  /** Tokens trained on so far. */
  tokens: number;
}

export interface ShardEntry {
  file: string;
  bytes: number;
  sha256: string;
}

export interface Manifest {
  format: typeof FORMAT;
  step: number;
  state: TrainerState;
  shards: ShardEntry[];
  /** Free-form facts of the run (stage plan, partition), kept for humans and re-planning. */
  run: Record<string, unknown>;
}

export interface LoadedCheckpoint {
  dir: string;
  manifest: Manifest;
  params: Map<string, Float32Array>;
  moments: Map<string, { m: Float32Array; v: Float32Array; t: number }>;
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

export function checkpointDir(outputDir: string, step: number): string {
  return path.join(outputDir, `${PREFIX}${step}`);
}

/** Writes one rank's shard: its trainable tensors and their AdamW moments. */
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
  writeSafetensors(file, tensors, { adam_steps: JSON.stringify(steps) });
  return { file: path.basename(file), bytes: fs.statSync(file).size, sha256: sha256(file) };
}

/** Commits a checkpoint: shards are already in `tmpDir`; the manifest goes last, then the rename. */
export function commitCheckpoint(outputDir: string, tmpDir: string, manifest: Manifest): string {
  const bytes = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
  writeFileAtomic(path.join(tmpDir, MANIFEST), (fd) => {
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(fd, bytes, done);
  });
  const final = checkpointDir(outputDir, manifest.step);
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(tmpDir, final);
  return final;
}

export function saveCheckpoint(
  outputDir: string,
  state: TrainerState,
  params: ReadonlyMap<string, Float32Array>,
  optimizer: AdamW,
  shapes: ReadonlyMap<string, number[]>,
  run: Record<string, unknown>,
  keep: number,
): string {
  fs.mkdirSync(outputDir, { recursive: true });
  const tmp = path.join(outputDir, `.${PREFIX}${state.step}.partial-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  const shard = writeShard(path.join(tmp, 'shard-00000.safetensors'), params, optimizer, shapes);
  const dir = commitCheckpoint(outputDir, tmp, { format: FORMAT, step: state.step, state, shards: [shard], run });
  pruneCheckpoints(outputDir, keep);
  return dir;
}

function committedSteps(outputDir: string): number[] {
  if (!fs.existsSync(outputDir)) return [];
  return fs
    .readdirSync(outputDir)
    .filter((d) => d.startsWith(PREFIX) && /^\d+$/.test(d.slice(PREFIX.length)))
    .map((d) => Number(d.slice(PREFIX.length)))
    .sort((a, b) => b - a);
}

/** Keeps the newest `keep` committed checkpoints (0 keeps all). */
export function pruneCheckpoints(outputDir: string, keep: number): void {
  if (keep <= 0) return;
  for (const step of committedSteps(outputDir).slice(keep)) fs.rmSync(checkpointDir(outputDir, step), { recursive: true, force: true });
}

/** Reads and verifies a manifest; returns null (with the reason logged) when it cannot be trusted. */
export function readManifest(dir: string): Manifest | null {
  const file = path.join(dir, MANIFEST);
  if (!fs.existsSync(file)) return null;
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as Manifest;
    if (m.format !== FORMAT) throw new Error(`unknown format ${String(m.format)}`);
    for (const s of m.shards) {
      const f = path.join(dir, s.file);
      if (!fs.existsSync(f)) throw new Error(`shard ${s.file} is missing`);
      if (fs.statSync(f).size !== s.bytes) throw new Error(`shard ${s.file} has ${fs.statSync(f).size} bytes, manifest says ${s.bytes}`);
      if (sha256(f) !== s.sha256) throw new Error(`shard ${s.file} fails its checksum`);
    }
    return m;
  } catch (err) {
    log.warn({ dir, err: (err as Error).message }, 'ignoring checkpoint that does not verify');
    return null;
  }
}

/** The newest checkpoint whose manifest and shards verify, or null. */
export function latestCheckpoint(outputDir: string): LoadedCheckpoint | null {
  for (const step of committedSteps(outputDir)) {
    const dir = checkpointDir(outputDir, step);
    const manifest = readManifest(dir);
    if (!manifest) continue;
    const params = new Map<string, Float32Array>();
    const moments = new Map<string, { m: Float32Array; v: Float32Array; t: number }>();
    for (const s of manifest.shards) {
      const f = openSafetensors(path.join(dir, s.file));
      const steps = JSON.parse(f.metadata?.adam_steps ?? '{}') as Record<string, number>;
      for (const n of f.names()) {
        if (n.startsWith('param.')) params.set(n.slice(6), f.readF32(n));
      }
      for (const [name, t] of Object.entries(steps)) moments.set(name, { m: f.readF32(`exp_avg.${name}`), v: f.readF32(`exp_avg_sq.${name}`), t });
      f.close();
    }
    return { dir, manifest, params, moments };
  }
  return null;
}
