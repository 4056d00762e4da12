// Writing checkpoint directories in the Hugging Face layout: one file, or shards with an index. The
// plan of which tensor goes into which shard is separate from writing, so that pipeline ranks can each
// write their own shards of one export.
import fs from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic } from '../../common/atomic-file.ts';
import { log } from '../../common/log.ts';
import { DEFAULT_MAX_SHARD_BYTES, INDEX_FILE, isDtype, SafetensorsError, SINGLE_FILE, tensorBytes } from './safetensors-format.ts';
import { writeSafetensors, type TensorToWrite } from './safetensors-write.ts';

const SHARD_RE = /^model-\d{5}-of-\d{5}\.safetensors$/;

function shardName(k: number, n: number): string {
  return `model-${String(k).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
}

export interface WriteCheckpointOptions {
  /** Largest shard in tensor bytes; a single tensor larger than this gets a shard of its own. */
  maxShardBytes?: number;
  /** Written into every file's `__metadata__`, after `format: "pt"`. */
  metadata?: Record<string, string>;
  /** Shards never mix tensors of two parts (pipeline ranks). */
  partOf?: (name: string) => number;
}

/**
 * Writes tensors in the Hugging Face layout and returns the file names written. Shards are filled in
 * the given order (pass tensors in layer order so a block range lands in few shards). Each file is
 * atomic; the directory as a whole is not, so write into a fresh directory when a crash mid-save
 * must not mix two checkpoints. Files of an earlier save that the new layout does not use are removed
 * after the new files are in place.
 */
export function writeCheckpoint(dir: string, tensors: readonly TensorToWrite[], options: WriteCheckpointOptions = {}): string[] {
  const plan = planShards(dir, tensors, options);
  fs.mkdirSync(dir, { recursive: true });
  writeShardFiles(dir, plan, options.metadata);
  const written = plan.files.map((f) => f.file);
  if (plan.files.length > 1) {
    writeShardIndex(dir, plan);
    written.push(INDEX_FILE);
  }
  const keep = new Set(written);
  for (const f of fs.readdirSync(dir)) {
    if (keep.has(f)) continue;
    if (f === SINGLE_FILE || f === INDEX_FILE || SHARD_RE.test(f)) {
      log.debug({ dir, file: f }, 'removing file of an earlier checkpoint layout');
      fs.rmSync(path.join(dir, f), { force: true });
    }
  }
  return written;
}

export interface ShardPlan {
  files: { file: string; part: number; tensors: TensorToWrite[] }[];
  totalBytes: number;
}

/**
 * Which tensors go into which file. Shards are filled in the given order and never mix `part`s, so
 * that each pipeline rank can write the shards of its own blocks and every process computes the same
 * file names from tensor metadata alone.
 */
export function planShards(dir: string, tensors: readonly TensorToWrite[], options: WriteCheckpointOptions = {}): ShardPlan {
  const maxShardBytes = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(maxShardBytes > 0)) throw new Error(`writeCheckpoint: maxShardBytes must be positive, got ${maxShardBytes}`);
  const partOf = options.partOf ?? (() => 0);
  const seen = new Set<string>();
  for (const t of tensors) {
    if (seen.has(t.name)) throw new SafetensorsError(dir, 'duplicate tensor name', t.name);
    seen.add(t.name);
    if (!isDtype(t.dtype)) throw new SafetensorsError(dir, `unknown dtype ${JSON.stringify(t.dtype)}`, t.name);
  }
  const groups: { part: number; tensors: TensorToWrite[] }[] = [];
  let current: TensorToWrite[] = [];
  let currentPart = tensors.length > 0 ? partOf(tensors[0].name) : 0;
  let currentBytes = 0;
  let totalBytes = 0;
  for (const t of tensors) {
    const size = tensorBytes(t.dtype, t.shape);
    const part = partOf(t.name);
    totalBytes += size;
    if (current.length > 0 && (currentBytes + size > maxShardBytes || part !== currentPart)) {
      groups.push({ part: currentPart, tensors: current });
      current = [];
      currentBytes = 0;
    }
    current.push(t);
    currentPart = part;
    currentBytes += size;
  }
  if (current.length > 0 || groups.length === 0) groups.push({ part: currentPart, tensors: current });
  const names = groups.length === 1 ? [SINGLE_FILE] : groups.map((_, i) => shardName(i + 1, groups.length));
  return { files: groups.map((g, i) => ({ file: names[i], ...g })), totalBytes };
}

/** Writes the shard files of the plan (those of `part` only, when given), each atomically. */
export function writeShardFiles(dir: string, plan: ShardPlan, metadata?: Record<string, string>, part?: number): string[] {
  // transformers refuses safetensors files whose metadata lacks a known "format".
  const meta = { format: 'pt', ...metadata };
  const files = plan.files.filter((f) => part === undefined || f.part === part);
  for (const f of files) writeSafetensors(path.join(dir, f.file), f.tensors, meta);
  return files.map((f) => f.file);
}

/** model.safetensors.index.json of a sharded plan. It goes last: it makes the new shards visible to a reader. */
export function writeShardIndex(dir: string, plan: ShardPlan): void {
  const weightMap = new Map<string, string>();
  for (const f of plan.files) for (const t of f.tensors) weightMap.set(t.name, f.file);
  const sortedMap = Object.fromEntries([...weightMap].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
  writeJsonAtomic(path.join(dir, INDEX_FILE), { metadata: { total_size: plan.totalBytes }, weight_map: sortedMap });
}

/** "5GB", "500MB", "10KB" or a byte count, as Hugging Face's max_shard_size (decimal units). */
export function parseShardSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB)?\s*$/i.exec(text);
  const unit: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30 };
  const bytes = m ? Number(m[1]) * unit[(m[2] ?? 'B').toUpperCase()] : NaN;
  if (!(bytes >= 1)) throw new Error(`max shard size '${text}' is not a size like 5GB, 500MB or 1000000`);
  return Math.floor(bytes);
}
