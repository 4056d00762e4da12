// Committed checkpoints of a run: a directory per step holding one shard per rank and a manifest
// written last that lists every shard with its size and SHA-256. A directory without a manifest that
// verifies is never resumed from; a checkpoint is assembled under a temporary name and renamed.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { log } from '../common/log.ts';
import { writeJsonAtomic } from '../common/atomic-file.ts';
import type { EarlyStopState } from './early-stop.ts';

const FORMAT = 'propipe-checkpoint-1';
const MANIFEST = 'manifest.json';
const PREFIX = 'checkpoint-';

/** Where a run stands: enough to continue it exactly. */
export interface TrainerState {
  /** Optimizer steps taken so far. */
  step: number;
  stage: number;
  /** Steps taken within the current stage. */
  stageStep: number;
  /** The next batch of the current stage's data stream. */
  position: { epoch: number; index: number };
  earlyStop: EarlyStopState;
  /** Target tokens trained on so far. */
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
  /** Facts of the run kept for humans and re-planning (stage count, partition, train type). */
  run: Record<string, unknown>;
}

/** Streams the file through the hash in chunks: shards of a 13B export are gigabytes each. */
export function sha256File(file: string): string {
  const hash = crypto.createHash('sha256');
  const chunk = Buffer.allocUnsafe(8 << 20);
  const fd = fs.openSync(file, 'r');
  try {
    for (let n = fs.readSync(fd, chunk); n > 0; n = fs.readSync(fd, chunk)) hash.update(chunk.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

export function shardEntry(file: string): ShardEntry {
  return { file: path.basename(file), bytes: fs.statSync(file).size, sha256: sha256File(file) };
}

export function checkpointDir(outputDir: string, step: number): string {
  return path.join(outputDir, `${PREFIX}${step}`);
}

/** Where the shards of a checkpoint in progress are written before the commit renames it. */
export function partialDir(outputDir: string, step: number): string {
  return path.join(outputDir, `.${PREFIX}${step}.partial`);
}

/** Writes the manifest into the assembled directory, renames it into place and prunes old ones. */
export function commitCheckpoint(outputDir: string, step: number, state: TrainerState, shards: ShardEntry[], run: Record<string, unknown>, keep: number): string {
  const tmp = partialDir(outputDir, step);
  const manifest: Manifest = { format: FORMAT, step, state, shards, run };
  writeJsonAtomic(path.join(tmp, MANIFEST), manifest);
  const final = checkpointDir(outputDir, step);
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(tmp, final);
  pruneCheckpoints(outputDir, keep);
  return final;
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

/** Reads and verifies a manifest; null (with the reason logged) when it cannot be trusted. */
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
      if (sha256File(f) !== s.sha256) throw new Error(`shard ${s.file} fails its checksum`);
    }
    return m;
  } catch (err) {
    log.warn({ dir, err: (err as Error).message }, 'ignoring checkpoint that does not verify');
    return null;
  }
}

/** The newest checkpoint whose manifest and shards verify. */
export function latestManifest(outputDir: string): { dir: string; manifest: Manifest } | null {
  for (const step of committedSteps(outputDir)) {
    const dir = checkpointDir(outputDir, step);
    const manifest = readManifest(dir);
    if (manifest) return { dir, manifest };
  }
  return null;
}
