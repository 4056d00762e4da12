// C-Eval / MMLU accuracy: every question becomes a k-shot prompt, and the model's choice is the answer
// letter with the highest log-likelihood as the prompt's continuation. When each letter is one token
// (Llama, Qwen and Mistral tokenizers) that is the comparison of the letters' logits the benchmarks'
// code and lm-evaluation-harness make; the scoring itself is the project's option-likelihood scorer.
import { optionalTokenizer, type Pretrained } from '../model/hf/pretrained.ts';
import type { McQuestion } from '../recipe/multiple-choice.ts';
import { scoreMultipleChoice, type McModel, type McScoreOptions } from './multiple-choice.ts';
import type { TextTokenizer } from '../model/hf/tokenizer.ts';
import { loadBenchmark, type Split, type SubjectData } from './benchmark-data.ts';
import { buildPrompt, FORMATS, LETTERS } from './benchmark-prompt.ts';
import { categoryOf, type Benchmark } from './benchmark-subjects.ts';

export interface Score {
  correct: number;
  questions: number;
  /** correct / questions: every question weighs the same (MMLU's reported average). */
  accuracy: number;
}

export interface GroupScore extends Score {
  /** Mean of the subjects' accuracies (C-Eval's reported average). */
  subjectMean: number;
  subjects: number;
}

export interface BenchmarkResult {
  task: Benchmark;
  split: Split;
  shots: number;
  overall: GroupScore;
  categories: Record<string, GroupScore>;
  subjects: Record<string, Score & { category: string }>;
}

export interface BenchmarkOptions extends Omit<McScoreOptions, 'prompt' | 'delimiter'> {
  split?: Split;
  shots?: number;
}

/** Default split: C-Eval's test answers are withheld, so its val split is what is scored locally. */
export function defaultSplit(task: Benchmark): Split {
  return task === 'ceval' ? 'val' : 'test';
}

function group(scores: Score[]): GroupScore {
  const correct = scores.reduce((s, x) => s + x.correct, 0);
  const questions = scores.reduce((s, x) => s + x.questions, 0);
  return { correct, questions, accuracy: correct / questions, subjectMean: scores.reduce((s, x) => s + x.accuracy, 0) / scores.length, subjects: scores.length };
}

/** Builds the questions as prompts with letter options, for the option-likelihood scorer. */
export function benchmarkQuestions(task: Benchmark, subjects: readonly SubjectData[], shots: number): { questions: McQuestion[]; subjectOf: number[] } {
  const questions: McQuestion[] = [];
  const subjectOf: number[] = [];
  subjects.forEach((s, si) => {
    for (const item of s.items) {
      questions.push({ question: buildPrompt(task, s.subject, s.dev, shots, item), options: LETTERS.slice(0, item.options.length), answer: item.answer });
      subjectOf.push(si);
    }
  });
  return { questions, subjectOf };
}

export function summarizeBenchmark(task: Benchmark, split: Split, shots: number, subjects: readonly SubjectData[], subjectOf: readonly number[], predicted: readonly number[], answers: readonly number[]): BenchmarkResult {
  const per = subjects.map(() => ({ correct: 0, questions: 0 }));
  predicted.forEach((p, i) => {
    per[subjectOf[i]].questions++;
    if (p === answers[i]) per[subjectOf[i]].correct++;
  });
  const bySubject: BenchmarkResult['subjects'] = {};
  const byCategory = new Map<string, Score[]>();
  subjects.forEach((s, si) => {
    const score = { ...per[si], accuracy: per[si].correct / per[si].questions, category: categoryOf(task, s.subject) };
    bySubject[s.subject] = score;
    byCategory.set(score.category, [...(byCategory.get(score.category) ?? []), score]);
  });
  const categories = Object.fromEntries([...byCategory].sort(([a], [b]) => a.localeCompare(b)).map(([c, ss]) => [c, group(ss)]));
  return { task, split, shots, overall: group(Object.values(bySubject)), categories, subjects: bySubject };
}

/** Scores a model (a directory, or in-memory weights) on a benchmark in its own CSV layout. */
export async function evaluateBenchmark(model: McModel, tok: TextTokenizer, task: Benchmark, data: string, o: BenchmarkOptions = {}): Promise<BenchmarkResult> {
  const split = o.split ?? defaultSplit(task);
  const shots = o.shots ?? 5;
  const subjects = loadBenchmark(task, data, { split, shots });
  const { questions, subjectOf } = benchmarkQuestions(task, subjects, shots);
  const r = await scoreMultipleChoice(model, tok, questions, { ...o, prompt: 'continue', delimiter: FORMATS[task].delimiter });
  return summarizeBenchmark(task, split, shots, subjects, subjectOf, r.scores.map((s) => s.predicted), questions.map((q) => q.answer));
}

export async function evaluateBenchmarkDir(model: Pretrained, task: Benchmark, data: string, o: BenchmarkOptions = {}): Promise<BenchmarkResult> {
  const tok = await optionalTokenizer(model.dir);
  if (!tok) throw new Error(`${task} questions are text and need a tokenizer, but ${model.dir} has no tokenizer.json`);
  return evaluateBenchmark(model, tok, task, data, o);
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

/** The table `propipe eval --task` prints: subjects, then categories, then the overall line. */
export function formatBenchmark(r: BenchmarkResult): string {
  const rows: string[][] = [['subject', 'category', 'questions', 'accuracy']];
  for (const [s, v] of Object.entries(r.subjects)) rows.push([s, v.category, String(v.questions), pct(v.accuracy)]);
  rows.push(['', '', '', '']);
  for (const [c, v] of Object.entries(r.categories)) rows.push([`[${c}]`, `${v.subjects} subjects`, String(v.questions), `${pct(v.accuracy)} (subject mean ${pct(v.subjectMean)})`]);
  rows.push([`[overall] ${r.task} ${r.split}, ${r.shots}-shot`, `${r.overall.subjects} subjects`, String(r.overall.questions), `${pct(r.overall.accuracy)} (subject mean ${pct(r.overall.subjectMean)})`]);
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows.map((row) => row.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}
