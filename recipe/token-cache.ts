// Tokenize once: a dataset's token ids and labels, stored as one binary file keyed by everything that
// decides them — the file's content, the tokenizer files, the prompt template, max_length, the vocab
// size and the encoder version — and read back in one read with zero-copy views per example.
//
// Where: $PROPIPE_CACHE_DIR, else $XDG_CACHE_HOME/propipe, else ~/.cache/propipe (under tokens/).
// Beside the data would be simpler, but dataset volumes are often read-only (Kubernetes mounts);
// the key never depends on the path, so a copied dataset hits the same entry.
//
// Layout (little-endian): "PPTC", u32 version, u32 header bytes, header JSON (key, stats), zero
// padding to 4 bytes; u32 count; u32 offsets[count + 1]; i32 input_ids[total]; i32 labels[total].
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeFileAtomic, writeFully } from '../common/atomic-file.ts';
import { alpacaPrompt, type Dataset, type DatasetStats, type Example } from './data.ts';

const MAGIC = 'PPTC';
const FORMAT = 1;
/** Bump when the encoding of records changes (data.ts): old entries then miss instead of lying. */
export const ENCODER_VERSION = 1;

export function cacheRoot(): string {
  if (process.env.PROPIPE_CACHE_DIR) return process.env.PROPIPE_CACHE_DIR;
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'propipe');
}

export interface CacheKeyInput {
  /** The dataset's bytes (hashed). */
  content: Uint8Array;
  /** Directory of tokenizer.json / tokenizer_config.json / chat_template.jinja, if any. */
  tokenizerDir?: string | null;
  maxLength?: number;
  vocabSize?: number;
}

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja'];

export function cacheKey(k: CacheKeyInput): string {
  const h = createHash('sha256');
  h.update(`propipe-tokens format ${FORMAT} encoder ${ENCODER_VERSION}\n`);
  h.update(createHash('sha256').update(k.content).digest());
  for (const f of TOKENIZER_FILES) {
    const p = k.tokenizerDir ? path.join(k.tokenizerDir, f) : null;
    h.update(`\n${f}:`);
    if (p && fs.existsSync(p)) h.update(createHash('sha256').update(fs.readFileSync(p)).digest());
  }
  h.update(`\ntemplate:${alpacaPrompt('{instruction}', '{input}')}${alpacaPrompt('{instruction}')}`);
  h.update(`\nmax_length:${k.maxLength ?? 'none'} vocab:${k.vocabSize ?? 'tokenizer'}`);
  return h.digest('hex');
}

export function cachePath(datasetFile: string, key: string): string {
  return path.join(cacheRoot(), 'tokens', `${path.basename(datasetFile).replace(/[^\w.-]/g, '_')}-${key.slice(0, 24)}.bin`);
}

const align4 = (n: number) => (n + 3) & ~3;

/** Examples as three flat arrays (the cache file's body; also how tokenizer threads hand them over). */
export interface FlatExamples {
  offsets: Uint32Array;
  ids: Int32Array;
  labels: Int32Array;
}

export function flatten(examples: readonly Example[]): FlatExamples {
  const n = examples.length;
  const offsets = new Uint32Array(n + 1);
  for (let i = 0; i < n; i++) {
    const next = offsets[i] + examples[i].inputIds.length;
    if (next > 0xffffffff) throw new Error('more than 2^32 tokens do not fit the token cache; set PROPIPE_TOKEN_CACHE=0');
    offsets[i + 1] = next;
  }
  const ids = new Int32Array(offsets[n]);
  const labels = new Int32Array(offsets[n]);
  examples.forEach((e, i) => {
    ids.set(e.inputIds, offsets[i]);
    labels.set(e.labels, offsets[i]);
  });
  return { offsets, ids, labels };
}

/** Zero-copy views, one per example. */
export function unflatten(f: FlatExamples): Example[] {
  const n = f.offsets.length - 1;
  const out: Example[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = { inputIds: f.ids.subarray(f.offsets[i], f.offsets[i + 1]), labels: f.labels.subarray(f.offsets[i], f.offsets[i + 1]) };
  return out;
}

export function writeTokenCache(file: string, key: string, d: Dataset): void {
  const n = d.examples.length;
  const { offsets, ids, labels } = flatten(d.examples);
  const header = Buffer.from(JSON.stringify({ key, source: d.file, stats: d.stats }), 'utf8');
  const head = Buffer.alloc(align4(12 + header.length) + 4);
  head.write(MAGIC, 0, 'latin1');
  head.writeUInt32LE(FORMAT, 4);
  head.writeUInt32LE(header.length, 8);
  header.copy(head, 12);
  head.writeUInt32LE(n, head.length - 4);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeFileAtomic(file, (fd) => {
    writeFully(fd, head);
    for (const a of [offsets, ids, labels]) writeFully(fd, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  });
}

/** The cached dataset, or null when there is no entry or it is not the one for `key`. */
export function readTokenCache(file: string, key: string, datasetFile: string): Dataset | null {
  if (!fs.existsSync(file)) return null;
  let buf: Buffer = fs.readFileSync(file);
  if (buf.byteOffset % 4 !== 0) buf = Buffer.from(buf);
  if (buf.length < 16 || buf.toString('latin1', 0, 4) !== MAGIC || buf.readUInt32LE(4) !== FORMAT) return null;
  const hlen = buf.readUInt32LE(8);
  const header = JSON.parse(buf.toString('utf8', 12, 12 + hlen)) as { key: string; stats: DatasetStats };
  if (header.key !== key) return null;
  let at = align4(12 + hlen);
  const n = buf.readUInt32LE(at);
  at += 4;
  const offsets = new Uint32Array(buf.buffer, buf.byteOffset + at, n + 1);
  at += 4 * (n + 1);
  const total = offsets[n];
  if (buf.length !== at + 8 * total) return null;
  const ids = new Int32Array(buf.buffer, buf.byteOffset + at, total);
  const labels = new Int32Array(buf.buffer, buf.byteOffset + at + 4 * total, total);
  return { file: datasetFile, examples: unflatten({ offsets, ids, labels }), stats: header.stats };
}
