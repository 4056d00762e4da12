// What a run evaluates when training ends (`eval_tasks`): benchmark files or directories with their
// task type. In YAML a list of {task, data, shots?, split?}; as a flag `task=path[,task=path…]`.
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

export const EVAL_TASK_TYPES = ['ceval', 'mmlu', 'mc'] as const;
export type EvalTaskType = (typeof EVAL_TASK_TYPES)[number];

export const evalTaskSchema = z
  .object({
    /** ceval / mmlu: the benchmark's CSV layout, scored by answer letter; mc: JSONL, scored by option likelihood. */
    task: z.enum(EVAL_TASK_TYPES),
    data: z.string().min(1),
    /** Dev-split examples before each question (ceval, mmlu). */
    shots: z.number().int().min(0).max(20).default(5),
    /** Split scored (ceval, mmlu); default: val for C-Eval (its test answers are not public), test for MMLU. */
    split: z.enum(['val', 'test', 'dev']).optional(),
  })
  .strict();

export type EvalTask = z.infer<typeof evalTaskSchema>;

/** `ceval=data/ceval,mmlu=data/mmlu` → the list the schema takes; anything else is left for zod to reject. */
export function parseEvalTasksFlag(spec: string): unknown {
  return spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((item) => {
      const eq = item.indexOf('=');
      if (eq < 1) throw new Error(`eval_tasks: '${item}' is not task=path (task: ${EVAL_TASK_TYPES.join(', ')})`);
      return { task: item.slice(0, eq), data: item.slice(eq + 1) };
    });
}

/** Written by the final evaluation (worker/final-eval.ts) into output_dir. */
export const EVAL_RESULTS = 'eval_results.json';

/** The final evaluation's scores for result.json, read without loading any model (the coordinator). */
export function readEvalResults(outputDir: string): unknown[] | undefined {
  const file = path.join(outputDir, EVAL_RESULTS);
  if (!fs.existsSync(file)) return undefined;
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { tasks: unknown[] }).tasks;
}
