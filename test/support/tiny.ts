// A tiny random model and a small text dataset for training tests, made fresh in a temp dir.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRandomModel } from '../../model/hf/init.ts';
import { Rng } from '../../common/rng.ts';
import { openSafetensors } from '../../model/hf/safetensors-read.ts';
import { writeSafetensors } from '../../model/hf/safetensors-write.ts';

export interface Tiny {
  root: string;
  model: string;
  train: string;
  val: string;
}

const WORDS = 'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu'.split(' ');

export async function makeTiny(opts: { layers?: number; tie?: boolean; qkvBias?: boolean } = {}): Promise<Tiny> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-tiny-'));
  const model = path.join(root, 'base');
  await createRandomModel(model, { layers: opts.layers ?? 4, hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, vocab: 300, seed: 5, tie: opts.tie, qkvBias: opts.qkvBias });
  const rng = new Rng(9);
  const lines = (n: number) => Array.from({ length: n }, () => JSON.stringify({ text: Array.from({ length: 10 }, () => WORDS[rng.nextInt(WORDS.length)]).join(' ') })).join('\n') + '\n';
  const train = path.join(root, 'train.jsonl');
  const val = path.join(root, 'val.jsonl');
  fs.writeFileSync(train, lines(24));
  fs.writeFileSync(val, lines(8));
  return { root, model, train, val };
}

/** Rewrites one tensor of a single-file model with NaN everywhere (a model that can only diverge). */
export function poisonTensor(modelDir: string, name: string): void {
  const file = path.join(modelDir, 'model.safetensors');
  const f = openSafetensors(file);
  const tensors = f.names().map((n) => ({ name: n, dtype: f.dtype(n), shape: f.shape(n), data: n === name ? new Float32Array(f.shape(n).reduce((a, b) => a * b, 1)).fill(NaN) : new Uint8Array(f.readRaw(n).bytes) }));
  f.close();
  writeSafetensors(file, tensors);
}
