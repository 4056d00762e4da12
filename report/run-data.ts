// What a run directory holds, read for the report: metrics.jsonl (steps, evaluations, stage events,
// the run config), result.json when a pipelined run wrote one, and a few steps of trace.json.
import fs from 'node:fs';
import path from 'node:path';

type Rec = Record<string, unknown>;

export interface StepPoint {
  step: number;
  stage: number;
  loss: number;
  gradNorm?: number;
  clipScale?: number;
  maxGradNorm?: number;
  lrBlocks?: Record<string, number>;
  tokensPerSec?: number;
  seconds?: number;
  busy?: number[];
  rss?: number[];
}

export interface Span {
  rank: number;
  name: string;
  /** Milliseconds from the first span of the window. */
  start: number;
  end: number;
}

export interface RunData {
  name: string;
  dir: string;
  config: Rec | null;
  layers: number | null;
  /** Blocks each stage trains. */
  stages: number[][];
  workers: number;
  steps: StepPoint[];
  evals: { step: number; stage: number; loss: number; improved: boolean | null }[];
  stageStarts: { step: number; stage: number; layers: number[] }[];
  earlyStops: { step: number; stage: number }[];
  checkpoints: number[];
  recoveries: { reason: string }[];
  /** Scores of the final model on eval_tasks (C-Eval, MMLU, multiple choice), when the run had them. */
  evalTasks: { task: string; split: string; shots: number; accuracy: number; correct: number; questions: number }[];
  result: Rec | null;
  /** A few consecutive pipeline steps of trace.json (empty for single-process runs). */
  timeline: { steps: number[]; spans: Span[] };
}

export class ReportError extends Error {}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

function readJsonLines(file: string): Rec[] {
  const out: Rec[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const t = line.trim().replace(/,$/, '');
    if (!t || t === '[' || t === ']') continue;
    try {
      out.push(JSON.parse(t));
    } catch {
      // a torn last line of a crashed run
    }
  }
  return out;
}

/** Records of the latest run in the file: a fresh (not resumed) run into the same directory starts over. */
function latestRun(records: Rec[]): Rec[] {
  let from = 0;
  records.forEach((r, i) => {
    if (r.event === 'run' && !(r.config as Rec | undefined)?.resume) from = i;
  });
  return records.slice(from);
}

/** Keeps the last record of every step (a recovered run repeats the steps after its checkpoint). */
function lastPerStep<T extends { step: number }>(xs: T[]): T[] {
  const by = new Map<number, T>();
  for (const x of xs) by.set(x.step, x);
  return [...by.values()].sort((a, b) => a.step - b.step);
}

export function readTimeline(file: string, count = 3): RunData['timeline'] {
  if (!fs.existsSync(file)) return { steps: [], spans: [] };
  const events = readJsonLines(file).filter((e) => e.ph === 'X' && typeof e.ts === 'number');
  const steps = [...new Set(events.map((e) => Number((e.args as Rec | undefined)?.step)))].filter(Number.isFinite).sort((a, b) => a - b);
  // The last few steps: past the first step's graph building and warm-up.
  const chosen = steps.slice(Math.max(0, steps.length - count));
  const picked = events.filter((e) => chosen.includes(Number((e.args as Rec).step)));
  if (!picked.length) return { steps: [], spans: [] };
  const t0 = Math.min(...picked.map((e) => e.ts as number));
  const spans = picked.map((e) => ({ rank: Number(e.tid), name: String(e.name), start: ((e.ts as number) - t0) / 1000, end: ((e.ts as number) + Number(e.dur) - t0) / 1000 }));
  return { steps: chosen, spans };
}

export function readRun(dir: string): RunData {
  const file = path.join(dir, 'metrics.jsonl');
  if (!fs.existsSync(dir)) throw new ReportError(`${dir} does not exist: give the output_dir of a run (propipe train or launch)`);
  if (!fs.existsSync(file)) throw new ReportError(`${dir} has no metrics.jsonl: give the output_dir of a run (propipe train and launch write metrics.jsonl there)`);
  const records = latestRun(readJsonLines(file));
  const run = [...records].reverse().find((r) => r.event === 'run');
  const steps = lastPerStep(
    records
      .filter((r) => r.event === undefined && num(r.loss) !== undefined && num(r.step) !== undefined && r.eval_loss === undefined)
      .map((r) => ({
        step: num(r.step)!,
        stage: num(r.stage) ?? 0,
        loss: num(r.loss)!,
        gradNorm: num(r.grad_norm),
        clipScale: num(r.clip_scale),
        maxGradNorm: num(r.max_grad_norm),
        lrBlocks: r.lr_blocks as Record<string, number> | undefined,
        tokensPerSec: num(r.tokens_per_s) ?? (num(r.tokens) !== undefined && num(r.seconds) ? num(r.tokens)! / num(r.seconds)! : undefined),
        seconds: num(r.seconds),
        busy: r.busy as number[] | undefined,
        rss: r.rss as number[] | undefined,
      })),
  );
  if (!steps.length) throw new ReportError(`${file} has no training steps yet: nothing to plot`);
  const evals = lastPerStep(records.filter((r) => r.event === undefined && num(r.eval_loss) !== undefined && num(r.step) !== undefined).map((r) => ({ step: num(r.step)!, stage: num(r.stage) ?? 0, loss: num(r.eval_loss)!, improved: (r.improved as boolean | null) ?? null })));
  const stageStarts = lastPerStep(records.filter((r) => r.event === 'stage_start').map((r) => ({ step: num(r.step) ?? 0, stage: num(r.stage) ?? 0, layers: (r.layers as number[]) ?? [] })));
  const resultFile = path.join(dir, 'result.json');
  return {
    name: path.basename(path.resolve(dir)),
    dir: path.resolve(dir),
    config: (run?.config as Rec) ?? null,
    layers: num(run?.layers) ?? null,
    stages: (run?.stages as number[][]) ?? stageStarts.map((s) => s.layers),
    workers: num(run?.workers) ?? 0,
    steps,
    evals,
    stageStarts,
    earlyStops: records.filter((r) => r.event === 'early_stop').map((r) => ({ step: num(r.step)!, stage: num(r.stage) ?? 0 })),
    checkpoints: [...new Set(records.filter((r) => r.event === 'checkpoint').map((r) => num(r.step)!))],
    recoveries: records.filter((r) => r.event === 'recover').map((r) => ({ reason: String(r.reason) })),
    evalTasks: records.filter((r) => r.event === 'eval_task').map((r) => ({ task: String(r.task), split: String(r.split ?? ''), shots: num(r.shots) ?? 0, accuracy: num(r.accuracy) ?? NaN, correct: num(r.correct) ?? 0, questions: num(r.questions) ?? 0 })),
    result: fs.existsSync(resultFile) ? JSON.parse(fs.readFileSync(resultFile, 'utf8')) : null,
    timeline: readTimeline(path.join(dir, 'trace.json')),
  };
}
