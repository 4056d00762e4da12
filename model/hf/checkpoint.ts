// Hugging Face checkpoint directories: one `model.safetensors`, or shards plus
// `model.safetensors.index.json`.
import fs from 'node:fs';
import path from 'node:path';
import { log } from '../../common/log.ts';
import { INDEX_FILE, isPlainObject, REEXPORT, SINGLE_FILE, SafetensorsError, type Dtype } from './safetensors-format.ts';
import { SafetensorsFile, type RawTensor } from './safetensors-read.ts';

/** Read access to a checkpoint directory, single-file or sharded; shards are opened on first use. */
export interface Checkpoint {
  readonly dir: string;
  names(): string[];
  has(name: string): boolean;
  shape(name: string): number[];
  dtype(name: string): Dtype;
  readF32(name: string): Float32Array;
  readRaw(name: string): RawTensor;
  close(): void;
}

class SingleFileCheckpoint implements Checkpoint {
  readonly dir: string;
  private readonly file: SafetensorsFile;
  constructor(dir: string, file: SafetensorsFile) {
    this.dir = dir;
    this.file = file;
  }
  names(): string[] { return this.file.names(); }
  has(name: string): boolean { return this.file.has(name); }
  shape(name: string): number[] { return this.file.shape(name); }
  dtype(name: string): Dtype { return this.file.dtype(name); }
  readF32(name: string): Float32Array { return this.file.readF32(name); }
  readRaw(name: string): RawTensor { return this.file.readRaw(name); }
  close(): void { this.file.close(); }
}

class ShardedCheckpoint implements Checkpoint {
  readonly dir: string;
  private readonly indexPath: string;
  private readonly weightMap: Map<string, string>;
  private readonly open = new Map<string, SafetensorsFile>();

  constructor(dir: string, indexPath: string, weightMap: Map<string, string>) {
    this.dir = dir;
    this.indexPath = indexPath;
    this.weightMap = weightMap;
  }

  names(): string[] { return [...this.weightMap.keys()]; }
  has(name: string): boolean { return this.weightMap.has(name); }
  shape(name: string): number[] { return this.shardFor(name).shape(name); }
  dtype(name: string): Dtype { return this.shardFor(name).dtype(name); }
  readF32(name: string): Float32Array { return this.shardFor(name).readF32(name); }
  readRaw(name: string): RawTensor { return this.shardFor(name).readRaw(name); }

  close(): void {
    for (const f of this.open.values()) f.close();
    this.open.clear();
  }

  private shardFor(name: string): SafetensorsFile {
    const shard = this.weightMap.get(name);
    if (shard === undefined) {
      throw new SafetensorsError(this.indexPath, `no tensor "${name}" in weight_map (${this.weightMap.size} tensors)`);
    }
    let file = this.open.get(shard);
    if (file) return file;
    const listed = [...this.weightMap].filter(([, s]) => s === shard).map(([n]) => n);
    const shardPath = path.join(this.dir, shard);
    if (!fs.existsSync(shardPath)) {
      throw new SafetensorsError(
        this.indexPath,
        `shard "${shard}" (holding ${listed.length} tensors, e.g. "${listed[0]}") is missing from ${this.dir}; ` +
          'the download is incomplete — re-download the checkpoint',
      );
    }
    file = SafetensorsFile.open(shardPath);
    // Check the whole shard against the index once, so a stale index fails here and not mid-load.
    const absent = listed.filter((n) => !file!.has(n));
    if (absent.length > 0) {
      file.close();
      throw new SafetensorsError(
        shardPath,
        `${INDEX_FILE} places ${absent.length} tensors here that the file does not contain (e.g. "${absent[0]}"); ` +
          `the index and shards are from different exports — ${REEXPORT}`,
      );
    }
    this.open.set(shard, file);
    return file;
  }
}

function readIndex(indexPath: string): Map<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (err) {
    throw new SafetensorsError(indexPath, `cannot read the index (${(err as Error).message}); ${REEXPORT}`, undefined, { cause: err });
  }
  const weightMap = isPlainObject(parsed) ? parsed.weight_map : undefined;
  if (!isPlainObject(weightMap)) throw new SafetensorsError(indexPath, `has no "weight_map" object; ${REEXPORT}`);
  const out = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // Shard names come from a file we did not write; a path in them could point anywhere on disk.
    if (typeof shard !== 'string' || shard === '' || shard !== path.basename(shard) || shard === '.' || shard === '..' || shard.includes('\\')) {
      throw new SafetensorsError(indexPath, `weight_map maps "${name}" to ${JSON.stringify(shard)}, which is not a file name in the checkpoint directory`);
    }
    out.set(name, shard);
  }
  return out;
}

/** Opens a Hugging Face checkpoint directory. Like transformers, prefers `model.safetensors` over an index. */
export function openCheckpoint(dir: string): Checkpoint {
  const single = path.join(dir, SINGLE_FILE);
  const index = path.join(dir, INDEX_FILE);
  if (fs.existsSync(single)) {
    if (fs.existsSync(index)) log.warn({ dir }, `both ${SINGLE_FILE} and ${INDEX_FILE} present; using ${SINGLE_FILE}`);
    return new SingleFileCheckpoint(dir, SafetensorsFile.open(single));
  }
  if (fs.existsSync(index)) return new ShardedCheckpoint(dir, index, readIndex(index));
  let hint = '';
  try {
    const files = fs.readdirSync(dir);
    if (files.some((f) => f.endsWith('.bin') || f.endsWith('.pt') || f.endsWith('.pth'))) {
      hint = ' It has PyTorch pickle weights: convert them to safetensors first (transformers save_pretrained(safe_serialization=True)).';
    }
  } catch (err) {
    throw new SafetensorsError(dir, `cannot read the checkpoint directory (${(err as NodeJS.ErrnoException).code ?? String(err)})`, undefined, { cause: err });
  }
  throw new SafetensorsError(dir, `no ${SINGLE_FILE} or ${INDEX_FILE}.${hint}`);
}

export { parseShardSize, planShards, writeCheckpoint, writeShardFiles, writeShardIndex, type ShardPlan, type WriteCheckpointOptions } from './checkpoint-write.ts';
