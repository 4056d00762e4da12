// Evaluation when training ends (`eval_tasks`): the exported model is scored on each benchmark, the
// scores are logged, appended to metrics.jsonl and written to output_dir/eval_results.json (which
// result.json includes). The tasks' data is checked before training starts, so a wrong path does not
// surface only after hours of training.
import path from 'node:path';
import { childLog } from '../common/log.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { writeJsonAtomic } from '../common/atomic-file.ts';
import { EVAL_RESULTS, type EvalTask } from '../recipe/eval-tasks.ts';
import { readMcJsonl } from '../recipe/multiple-choice.ts';
import { evaluateMcFile } from '../tasks/multiple-choice.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import { loadBenchmark } from '../tasks/benchmark-data.ts';
import { defaultSplit, evaluateBenchmarkDir, type GroupScore } from '../tasks/benchmark-eval.ts';
import { MetricsLog } from './metrics-log.ts';

const log = childLog({ component: 'final-eval' });

export interface EvalTaskScore {
  task: EvalTask['task'];
  data: string;
  split?: string;
  shots?: number;
  accuracy: number;
  correct: number;
  questions: number;
  /** ceval / mmlu: per category (with C-Eval's subject mean) and per subject. */
  categories?: Record<string, GroupScore>;
  subjects?: Record<string, { accuracy: number; correct: number; questions: number; category: string }>;
  /** mc: accuracy of the per-token log-likelihood. */
  accNorm?: number;
}

/** Reads every task's data as the evaluation will, throwing the reader's error naming file and row. */
export async function checkEvalTasks(run: RunConfig): Promise<void> {
  for (const t of run.eval_tasks) {
    try {
      if (t.task === 'mc') await readMcJsonl(t.data);
      else loadBenchmark(t.task, t.data, { split: t.split ?? defaultSplit(t.task), shots: t.shots });
    } catch (err) {
      throw new Error(`eval_tasks (${t.task} ${t.data}): ${(err as Error).message}`);
    }
  }
}

async function scoreTask(t: EvalTask, modelDir: string, run: RunConfig): Promise<EvalTaskScore> {
  const model = openPretrained(modelDir);
  const common = { batchSize: run.per_device_eval_batch_size, device: run.device, threads: run.threads };
  if (t.task === 'mc') {
    const r = await evaluateMcFile(model, t.data, common);
    return { task: t.task, data: t.data, accuracy: r.accuracy, correct: r.correct, questions: r.questions, accNorm: r.accNorm };
  }
  const r = await evaluateBenchmarkDir(model, t.task, t.data, { ...common, shots: t.shots, split: t.split });
  return { task: t.task, data: t.data, split: r.split, shots: r.shots, accuracy: r.overall.accuracy, correct: r.overall.correct, questions: r.overall.questions, categories: r.categories, subjects: r.subjects };
}

/** Scores `modelDir` on every task of the run; [] when it has none. */
export async function finalEvaluation(run: RunConfig, modelDir: string): Promise<EvalTaskScore[]> {
  if (run.eval_tasks.length === 0) return [];
  const scores: EvalTaskScore[] = [];
  const metrics = new MetricsLog(run.output_dir);
  try {
    for (const t of run.eval_tasks) {
      const t0 = performance.now();
      const s = await scoreTask(t, modelDir, run);
      scores.push(s);
      const cats = Object.entries(s.categories ?? {}).map(([c, g]) => `${c} ${(100 * g.accuracy).toFixed(1)}% (${g.questions})`);
      log.info({ task: s.task, data: s.data, split: s.split, shots: s.shots, accuracy: s.accuracy, correct: s.correct, questions: s.questions, seconds: Math.round((performance.now() - t0) / 100) / 10 },
        `${s.task}${s.split ? ` ${s.split}` : ''}${s.shots !== undefined ? ` ${s.shots}-shot` : ''}: accuracy ${(100 * s.accuracy).toFixed(2)}% (${s.correct}/${s.questions})${cats.length ? ` — ${cats.join(', ')}` : ''}`);
      metrics.write({ event: 'eval_task', task: s.task, data: s.data, split: s.split, shots: s.shots, accuracy: s.accuracy, correct: s.correct, questions: s.questions, categories: s.categories ? Object.fromEntries(Object.entries(s.categories).map(([c, g]) => [c, g.accuracy])) : undefined });
    }
  } finally {
    metrics.close();
  }
  writeJsonAtomic(path.join(run.output_dir, EVAL_RESULTS), { model: modelDir, tasks: scores });
  return scores;
}
