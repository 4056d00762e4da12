// Data at the scale of real SFT sets: a synthetic alpaca-style file of short examples (200,000 by
// default, like Stanford Alpaca's 52k × 4), loaded as a run loads it, and trained with and without
// sequence packing. Prints one JSON document:
//   load:    tokenization on one thread (the pre-cache path), on all cores, and from the token cache;
//   train:   time to the first step (process start of the Trainer → first metrics line) with a cold and
//            a warm cache, and target tokens/s over steady steps with packing off and on.
//
//   node --import tsx bench/data.ts [--examples 200000] [--max-length 512] [--steps 6] [--batch 4]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Trainer } from '../local/trainer.ts';
import { createRandomModel } from '../model/hf/init.ts';
import { loadTokenizer } from '../model/hf/tokenizer.ts';
import { Rng } from '../common/rng.ts';
import { loadDataset } from '../recipe/load-dataset.ts';
import { packExamples } from '../recipe/packing.ts';
import { Flags, hostInfo, info, median, printJson, round } from './common.ts';

const WORDS = 'the a of to and in is it that for on with as was at by be this from or an are not have but what all were when we there can which one their if do will each about how up out them then she many some so these would other into has more her two like him see time could no make than first been its who now people my made over did down only way find use may water long little very after words called just where most know'.split(' ');

function sentence(rng: Rng, min: number, max: number): string {
  const n = min + rng.nextInt(max - min + 1);
  return Array.from({ length: n }, () => WORDS[rng.nextInt(WORDS.length)]).join(' ');
}

function writeAlpaca(file: string, count: number): void {
  const rng = new Rng(17);
  const fd = fs.openSync(file, 'w');
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    const rec = { instruction: sentence(rng, 4, 14), input: rng.nextInt(3) === 0 ? sentence(rng, 3, 12) : '', output: sentence(rng, 3, 40) };
    lines.push(JSON.stringify(rec));
    if (lines.length === 5000) fs.writeSync(fd, lines.splice(0).join('\n') + '\n');
  }
  if (lines.length) fs.writeSync(fd, lines.join('\n') + '\n');
  fs.closeSync(fd);
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await fn();
  return [v, (performance.now() - t0) / 1000];
}

async function trainRun(root: string, model: string, dataset: string, name: string, o: { packing: boolean; steps: number; batch: number; maxLength: number }) {
  const out = path.join(root, name);
  const t0 = Date.now();
  await new Trainer({ model, dataset, output_dir: out, train_type: 'full', steps_per_stage: o.steps, per_device_train_batch_size: o.batch, max_length: o.maxLength, packing: o.packing, learning_rate: 1e-4, logging_steps: 1, seed: 3, save_steps: 0 }).train();
  const steps = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => typeof r.loss === 'number' && r.eval_loss === undefined);
  const steady = steps.slice(Math.min(2, steps.length - 1));
  return {
    timeToFirstStepSeconds: round((Date.parse(steps[0].time) - t0) / 1000, 2),
    targetTokensPerSec: round(median(steady.map((s) => s.tokens / s.seconds)), 1),
    stepSeconds: round(median(steady.map((s) => s.seconds)), 3),
    targetTokensPerStep: round(median(steady.map((s) => s.tokens)), 0),
  };
}

async function main(): Promise<void> {
  const f = new Flags(process.argv.slice(2));
  f.check(['examples', 'max-length', 'steps', 'batch']);
  const count = f.int('examples', 200000);
  const maxLength = f.int('max-length', 512);
  const steps = f.int('steps', 6);
  const batch = f.int('batch', 4);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-data-'));
  process.env.PROPIPE_CACHE_DIR = path.join(root, 'cache');
  const model = path.join(root, 'model');
  const corpus = Array.from({ length: 400 }, (_, i) => sentence(new Rng(i), 20, 60));
  await createRandomModel(model, { layers: 4, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 2048, seed: 1, corpus });
  const dataset = path.join(root, 'alpaca.jsonl');
  writeAlpaca(dataset, count);
  const bytes = fs.statSync(dataset).size;
  info(`data bench in ${root}: ${count} alpaca examples, ${(bytes / 1e6).toFixed(1)} MB`);

  const tokenizer = await loadTokenizer(model);
  const opts = { tokenizer, tokenizerDir: model, vocabSize: 2048, maxLength };
  const [serial, serialS] = await timed(() => loadDataset(dataset, { ...opts, threads: 1, cache: false }));
  info(`one thread: ${serialS.toFixed(1)} s`);
  const [, parallelS] = await timed(() => loadDataset(dataset, { ...opts, cache: false }));
  info(`${os.availableParallelism()} threads: ${parallelS.toFixed(1)} s`);
  const [, writeS] = await timed(() => loadDataset(dataset, opts));
  const [cached, cachedS] = await timed(() => loadDataset(dataset, opts));
  info(`cold + write cache ${writeS.toFixed(1)} s, cached ${cachedS.toFixed(2)} s`);
  if (cached.examples.length !== serial.examples.length) throw new Error('the cached dataset differs from the tokenized one');
  const cacheBytes = fs.readdirSync(path.join(root, 'cache', 'tokens')).reduce((s, n) => s + fs.statSync(path.join(root, 'cache', 'tokens', n)).size, 0);
  const lengths = serial.examples.map((e) => e.inputIds.length).sort((a, b) => a - b);
  const rows = packExamples(serial.examples, maxLength).length;

  // Time to first step: the first run tokenizes (cache emptied), the second reads the cache.
  fs.rmSync(path.join(root, 'cache'), { recursive: true, force: true });
  const cold = await trainRun(root, model, dataset, 'cold', { packing: false, steps, batch, maxLength });
  info(`train, cold cache: first step after ${cold.timeToFirstStepSeconds} s`);
  const warm = await trainRun(root, model, dataset, 'warm', { packing: false, steps, batch, maxLength });
  info(`train, warm cache: first step after ${warm.timeToFirstStepSeconds} s, ${warm.targetTokensPerSec} target tokens/s`);
  const packed = await trainRun(root, model, dataset, 'packed', { packing: true, steps, batch, maxLength });
  info(`train, packing: ${packed.targetTokensPerSec} target tokens/s`);

  printJson({
    bench: 'data',
    host: hostInfo(os.availableParallelism()),
    setup: { examples: count, fileMB: round(bytes / 1e6, 1), maxLength, batch, steps, model: { layers: 4, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 2048 }, tokensPerExample: { median: lengths[lengths.length >> 1], max: lengths[lengths.length - 1] } },
    load: {
      oneThreadSeconds: round(serialS, 2),
      oneThreadExamplesPerSec: round(count / serialS, 0),
      parallelThreads: os.availableParallelism(),
      parallelSeconds: round(parallelS, 2),
      coldWithCacheWriteSeconds: round(writeS, 2),
      cachedSeconds: round(cachedS, 3),
      cacheMB: round(cacheBytes / 1e6, 1),
    },
    packing: { examples: serial.examples.length, rows, examplesPerRow: round(serial.examples.length / rows, 2) },
    train: { coldCache: cold, warmCache: warm, packed, packingSpeedup: round(packed.targetTokensPerSec / warm.targetTokensPerSec, 2) },
    notes: [
      'time to first step = Trainer start → the first step\'s metrics line: data load, model preparation, session build and one step',
      'targetTokensPerSec counts loss-bearing tokens (what both runs learn from), median over the steps after the first two',
      'figures taken while the machine was shared by other sessions (host.load_average): absolute seconds move with the load, the ratios less so',
    ],
  });
  fs.rmSync(root, { recursive: true, force: true });
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
