// One tokenizer thread: encodes a chunk of JSONL lines with the same DatasetBuilder as readJsonl and
// hands the examples back as flat arrays (transferred, not copied).
import { parentPort, workerData } from 'node:worker_threads';
import { optionalTokenizer } from '../model/hf/pretrained.ts';
import { DatasetBuilder } from './data.ts';
import { flatten } from './token-cache.ts';

export interface ChunkJob {
  file: string;
  bytes: Uint8Array;
  firstLine: number;
  tokenizerDir: string | null;
  vocabSize?: number;
  maxLength?: number;
}

const job = workerData as ChunkJob;
try {
  const tokenizer = job.tokenizerDir ? await optionalTokenizer(job.tokenizerDir) : null;
  const builder = new DatasetBuilder(job.file, { tokenizer, vocabSize: job.vocabSize, maxLength: job.maxLength });
  const lines = new TextDecoder().decode(job.bytes).split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((l, i) => builder.add(l.endsWith('\r') ? l.slice(0, -1) : l, job.firstLine + i));
  const flat = flatten(builder.examples);
  parentPort!.postMessage({ flat, stats: builder.stats }, [flat.offsets.buffer as ArrayBuffer, flat.ids.buffer as ArrayBuffer, flat.labels.buffer as ArrayBuffer]);
} catch (err) {
  parentPort!.postMessage({ error: (err as Error).message });
}
