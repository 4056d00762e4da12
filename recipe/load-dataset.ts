// A training dataset as a run loads it: from the token cache when this exact tokenization was done
// before, else tokenized on all cores (one worker thread per chunk of lines) and then cached.
// PROPIPE_TOKEN_CACHE=0 turns the cache off; PROPIPE_TOKENIZE_THREADS caps the threads.
import fs from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { log } from '../common/log.ts';
import { DataError, DatasetBuilder, logLoaded, type Dataset, type DatasetStats, type Example, type ReadJsonlOptions } from './data.ts';
import { cacheKey, cachePath, readTokenCache, unflatten, writeTokenCache, type FlatExamples } from './token-cache.ts';
import type { ChunkJob } from './tokenize-worker.ts';

export interface LoadOptions extends ReadJsonlOptions {
  /** Where tokenizer threads load the tokenizer from (the model directory). */
  tokenizerDir?: string | null;
  /** Tokenizer threads on a cold start; default: the cores, at most one per MiB of data. */
  threads?: number;
  /**
   * Read and write the token cache. Default: on for files of 1 MiB or more (a smaller one tokenizes
   * in about a second, not worth a cache entry) unless PROPIPE_TOKEN_CACHE=0.
   */
  cache?: boolean;
}

const MIB = 1 << 20;

/** Splits at line ends into `parts` chunks and says at which line number each chunk starts. */
function chunkLines(bytes: Uint8Array, parts: number): { bytes: Uint8Array; firstLine: number }[] {
  const out: { bytes: Uint8Array; firstLine: number }[] = [];
  let start = 0;
  let line = 1;
  for (let p = 0; p < parts && start < bytes.length; p++) {
    let end = p === parts - 1 ? bytes.length : Math.max(start, Math.floor((bytes.length * (p + 1)) / parts));
    while (end < bytes.length && bytes[end - 1] !== 0x0a) end++;
    const chunk = bytes.subarray(start, end);
    out.push({ bytes: chunk, firstLine: line });
    for (let i = 0; i < chunk.length; i++) if (chunk[i] === 0x0a) line++;
    start = end;
  }
  return out;
}

/** From sources, a bootstrap that registers tsx; in the published package (dist/), the compiled file. */
function workerEntry(): URL {
  const fromSources = fs.existsSync(fileURLToPath(new URL('./tokenize-worker.ts', import.meta.url)));
  return new URL(fromSources ? './tokenize-worker.mjs' : './tokenize-worker.js', import.meta.url);
}

function runChunk(job: ChunkJob): Promise<{ flat: FlatExamples; stats: DatasetStats }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(workerEntry(), { workerData: job });
    w.once('message', (m: { flat: FlatExamples; stats: DatasetStats } | { error: string }) => {
      void w.terminate();
      if ('error' in m) reject(new DataError(m.error));
      else resolve(m);
    });
    w.once('error', reject);
  });
}

/** Tokenizes `bytes` (the file's content) on `threads` worker threads; same result as readJsonl. */
export async function tokenizeParallel(file: string, bytes: Uint8Array, o: LoadOptions, threads: number): Promise<Dataset> {
  if (threads <= 1) {
    const b = new DatasetBuilder(file, o);
    new TextDecoder().decode(bytes).split('\n').forEach((l, i) => b.add(l.endsWith('\r') ? l.slice(0, -1) : l, i + 1));
    return { file, examples: b.examples, stats: { ...b.stats, examples: b.examples.length } };
  }
  const parts = await Promise.all(
    chunkLines(bytes, threads).map((c) => runChunk({ file, bytes: c.bytes.slice(), firstLine: c.firstLine, tokenizerDir: o.tokenizerDir ?? null, vocabSize: o.vocabSize, maxLength: o.maxLength })),
  );
  const examples: Example[] = parts.flatMap((p) => unflatten(p.flat));
  const stats = parts.reduce<DatasetStats>(
    (s, p) => ({ ...s, lines: s.lines + p.stats.lines, dropped: s.dropped + p.stats.dropped, truncated: s.truncated + p.stats.truncated, tokens: s.tokens + p.stats.tokens, targetTokens: s.targetTokens + p.stats.targetTokens, formats: { text: s.formats.text + p.stats.formats.text, alpaca: s.formats.alpaca + p.stats.formats.alpaca, chat: s.formats.chat + p.stats.formats.chat, tokens: s.formats.tokens + p.stats.formats.tokens } }),
    { lines: 0, examples: 0, dropped: 0, truncated: 0, tokens: 0, targetTokens: 0, formats: { text: 0, alpaca: 0, chat: 0, tokens: 0 } },
  );
  return { file, examples, stats: { ...stats, examples: examples.length } };
}

export async function loadDataset(file: string, o: LoadOptions = {}): Promise<Dataset> {
  const t0 = performance.now();
  const bytes = fs.readFileSync(file);
  // A tokenizer object without its directory can neither be keyed nor loaded by other threads.
  const shareable = !o.tokenizer || !!o.tokenizerDir;
  const useCache = shareable && (o.cache ?? (process.env.PROPIPE_TOKEN_CACHE !== '0' && bytes.length >= MIB));
  const key = useCache ? cacheKey({ content: bytes, tokenizerDir: o.tokenizerDir, maxLength: o.maxLength, vocabSize: o.vocabSize }) : '';
  const cached = useCache ? cachePath(file, key) : '';
  if (useCache) {
    const hit = readTokenCache(cached, key, file);
    if (hit) return logLoaded(hit, o.maxLength, { cache: cached, seconds: +((performance.now() - t0) / 1000).toFixed(3) });
  }
  const cap = Number(process.env.PROPIPE_TOKENIZE_THREADS) || Infinity;
  const threads = shareable ? Math.max(1, Math.min(o.threads ?? Math.min(os.availableParallelism(), Math.ceil(bytes.length / MIB)), cap)) : 1;
  const d = await tokenizeParallel(file, bytes, o, threads);
  if (useCache) {
    try {
      writeTokenCache(cached, key, d);
    } catch (err) {
      log.warn({ cache: cached, err: (err as Error).message }, 'could not write the token cache (set PROPIPE_CACHE_DIR to a writable directory); continuing without it');
    }
  }
  return logLoaded(d, o.maxLength, { threads, cache: useCache ? cached : null, seconds: +((performance.now() - t0) / 1000).toFixed(3) });
}
