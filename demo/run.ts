// `propipe demo`: builds a tiny base model, pretrains it on domain A, fine-tunes it on domain B with
// several methods, and measures retention (A quiz) against adaptation (B quiz and loss). Each training
// run is a pipelined job of child processes (`propipe launch`), so peak memory is measured per method.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { MetricsFollower } from '../console/metrics-follower.ts';
import { RunDisplay } from '../console/run-display.ts';
import { createRandomModel } from '../model/hf/init.ts';
import { childLog } from '../common/log.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { loadTokenizer } from '../model/hf/tokenizer.ts';
import { corpusForTokenizer, DEMO_QUIZ_PROMPT, writeDemoData } from './corpus.ts';
import { DEMO_MODEL, demoMethods, pretrainConfig, type DemoPaths } from './plan.ts';
import { PROPIPE_BIN } from '../common/package-root.ts';
import { readJsonl } from '../recipe/data.ts';
import { evaluateLoss } from '../tasks/evaluate.ts';
import { readMcJsonl } from '../recipe/multiple-choice.ts';
import { scoreMultipleChoice } from '../tasks/multiple-choice.ts';
import type { RunConfigInput } from '../recipe/run-config.ts';
import type { Table } from '../report/page.ts';
import { writeReport } from '../report/write.ts';
import type { TrainResult } from '../local/trainer.ts';

const log = childLog({ component: 'demo' });
const BIN = PROPIPE_BIN;

export interface DemoOptions {
  out: string;
  seed: number;
  pretrainSteps: number;
  finetuneSteps: number;
  threads: number;
  /** Pipeline workers per training run (0 = one process). */
  workers: number;
}

export interface DemoRow {
  method: string;
  retentionA: number;
  accuracyB: number;
  lossB: number;
  trainableParams: number;
  peakRssMB: number;
  tokensPerSec: number;
  seconds: number;
}

export interface DemoResult {
  base: { accuracyA: number; accuracyB: number; lossB: number };
  rows: DemoRow[];
}

/** The summary of one training run, local or pipelined. */
export type RunSummary = Pick<TrainResult, 'finalDir' | 'trainableParams' | 'peakRssBytes' | 'tokensPerSec' | 'tokens' | 'steps'>;

/**
 * Trains with `file` in child processes: `propipe launch --workers N` (coordinator + N workers on
 * NATS and gRPC), or `propipe train` in one process when workers is 0.
 */
export async function trainChild(config: RunConfigInput, file: string, threads: number, workers: number, label?: string): Promise<RunSummary> {
  fs.writeFileSync(file, YAML.stringify({ ...config, threads }));
  // At a terminal: which run is going and how far, from the run's own metrics.jsonl.
  const display = new RunDisplay({ label });
  const follower = display.enabled ? new MetricsFollower(path.join(config.output_dir, 'metrics.jsonl'), (r) => display.observe(r)) : null;
  const args = workers > 0 ? ['launch', '--workers', String(workers), '--config', file] : ['train', '--config', file, '--json'];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PROPIPE_LOG_LEVEL: process.env.PROPIPE_LOG_LEVEL ?? 'warn' } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => {
      follower?.stop();
      display.stop();
      if (code !== 0) return reject(new Error(`training with ${file} failed (exit ${code}):\n${err.slice(-3000)}`));
      if (workers === 0) return resolve(JSON.parse(out.trim().split('\n').pop()!) as RunSummary);
      resolve(JSON.parse(fs.readFileSync(path.join(config.output_dir, 'result.json'), 'utf8')) as RunSummary);
    });
  });
}

async function measure(modelDir: string, files: { aQuiz: string; bQuiz: string; bValid: string }, threads: number) {
  const model = openPretrained(modelDir);
  const tok = await loadTokenizer(modelDir);
  const mc = { prompt: DEMO_QUIZ_PROMPT, threads } as const;
  const a = await scoreMultipleChoice(model, tok, await readMcJsonl(files.aQuiz), mc);
  const b = await scoreMultipleChoice(model, tok, await readMcJsonl(files.bQuiz), mc);
  const valid = await readJsonl(files.bValid, { tokenizer: tok });
  const loss = await evaluateLoss(model, valid.examples, { padId: tok.padId ?? 0, threads });
  model.checkpoint.close();
  return { accuracyA: a.accuracy, accuracyB: b.accuracy, lossB: loss.loss };
}

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  fs.mkdirSync(o.out, { recursive: true });
  const files = await writeDemoData(path.join(o.out, 'data'), o.seed);
  const paths: DemoPaths = { init: path.join(o.out, 'init'), base: path.join(o.out, 'pretrain', 'final'), pretrain: files.pretrain, bTrain: files.bTrain, bValid: files.bValid };
  fs.rmSync(paths.init, { recursive: true, force: true });
  await createRandomModel(paths.init, { ...DEMO_MODEL, seed: o.seed, corpus: corpusForTokenizer() });
  const configs = path.join(o.out, 'configs');
  fs.mkdirSync(configs, { recursive: true });

  log.info({ steps: o.pretrainSteps }, 'pretraining the base model on domain A');
  const methods = demoMethods(o.finetuneSteps);
  const runLabel = (i: number, name: string) => `run ${i + 1}/${methods.length + 1} ${name}`;
  await trainChild(pretrainConfig(paths, path.join(o.out, 'pretrain'), o.seed, o.pretrainSteps), path.join(configs, 'pretrain.yaml'), o.threads, o.workers, runLabel(0, 'pretrain on A'));
  const base = await measure(paths.base, files, o.threads);
  log.info(base, 'base model after pretraining');

  const rows: DemoRow[] = [];
  for (const [i, m] of methods.entries()) {
    log.info({ method: m.label }, 'fine-tuning on domain B');
    const t0 = performance.now();
    const r = await trainChild(m.config(paths, path.join(o.out, m.name), o.seed), path.join(configs, `${m.name}.yaml`), o.threads, o.workers, runLabel(i + 1, m.label));
    const seconds = (performance.now() - t0) / 1000;
    const after = await measure(r.finalDir, files, o.threads);
    rows.push({ method: m.label, retentionA: after.accuracyA, accuracyB: after.accuracyB, lossB: after.lossB, trainableParams: r.trainableParams, peakRssMB: r.peakRssBytes / 2 ** 20, tokensPerSec: r.tokensPerSec, seconds });
  }
  const result = { base, rows };
  fs.writeFileSync(path.join(o.out, 'results.json'), JSON.stringify(result, null, 2) + '\n');
  const report = writeReport(
    methods.map((m) => path.join(o.out, m.name)),
    path.join(o.out, 'report.html'),
    { title: 'propipe demo: fine-tuning on domain B, five methods', tables: [demoTable(result)], names: methods.map((m) => m.label) },
  );
  log.info({ file: report }, `report written: open ${report} in a browser`);
  return result;
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const baseLine = (r: DemoResult) => `base after pretraining on A: A quiz ${pct(r.base.accuracyA)}, B quiz ${pct(r.base.accuracyB)}, B valid loss ${r.base.lossB.toFixed(3)}`;

/** The retention table, for the terminal (markdown) and the report. */
export function demoTable(r: DemoResult): Table {
  return {
    title: 'Retention (A quiz) against adaptation (B quiz, B loss)',
    note: baseLine(r),
    head: ['method', 'A quiz (retention)', 'B quiz', 'B valid loss', 'trainable params', 'peak RSS MB', 'tokens/s'],
    rows: r.rows.map((x) => [x.method, pct(x.retentionA), pct(x.accuracyB), x.lossB.toFixed(3), x.trainableParams.toLocaleString('en-US'), x.peakRssMB.toFixed(0), Math.round(x.tokensPerSec)]),
  };
}

export function formatDemoTable(r: DemoResult): string {
  const t = demoTable(r);
  return [baseLine(r), '', `| ${t.head.join(' | ')} |`, `|${t.head.map(() => '---').join('|')}|`, ...t.rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');
}
