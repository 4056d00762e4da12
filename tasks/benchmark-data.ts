// The benchmarks' own CSV files. C-Eval: `<subject>_<split>.csv` under dev/, val/, test/, with a header
// `id,question,A,B,C,D,answer[,explanation]` (test has no answers). MMLU: `<subject>_<split>.csv` under
// [data/]dev, val, test, rows `question,A,B,C,D,answer` without a header. A flat directory of
// `<subject>_<split>.csv` files (EvalScope's custom layout) or one file works too.
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'csv-parse/sync';
import { DataError } from '../recipe/data.ts';
import type { Benchmark } from './benchmark-subjects.ts';

export type Split = 'dev' | 'val' | 'test';

export interface BenchmarkItem {
  question: string;
  /** Option texts A, B, C, D. */
  options: string[];
  /** Index of the right option; -1 when the split publishes no answers. */
  answer: number;
}

export interface SubjectData {
  subject: string;
  file: string;
  items: BenchmarkItem[];
  /** Few-shot examples from the dev split (empty when none were found). */
  dev: BenchmarkItem[];
}

const LETTERS = ['A', 'B', 'C', 'D'];
const CEVAL_HEADER = ['id', 'question', 'A', 'B', 'C', 'D'];
const MMLU_HEADER = ['question', 'A', 'B', 'C', 'D', 'answer'];

/** Parses one benchmark CSV (RFC 4180 quoting, UTF-8 with or without BOM). */
export function parseBenchmarkCsv(benchmark: Benchmark, text: string, file: string): BenchmarkItem[] {
  let rows: string[][];
  try {
    rows = parse(text, { bom: true, skip_empty_lines: true, relax_column_count: true }) as string[][];
  } catch (err) {
    throw new DataError(`${file}: not valid CSV: ${(err as Error).message}`);
  }
  let first = 0;
  let qCol = 0;
  if (benchmark === 'ceval') {
    if (!rows.length || CEVAL_HEADER.some((h, i) => rows[0][i]?.trim() !== h)) {
      throw new DataError(`${file}: a C-Eval file starts with the header ${CEVAL_HEADER.join(',')},answer; got '${(rows[0] ?? []).join(',')}' (is it an MMLU file? use --task mmlu)`);
    }
    [first, qCol] = [1, 1];
  } else if (rows.length && MMLU_HEADER.every((h, i) => rows[0][i]?.trim() === h)) first = 1;
  else if (rows.length && CEVAL_HEADER.every((h, i) => rows[0][i]?.trim() === h)) {
    throw new DataError(`${file}: starts with C-Eval's header ${rows[0].join(',')}; MMLU files have none (use --task ceval)`);
  }
  const items: BenchmarkItem[] = [];
  for (let r = first; r < rows.length; r++) {
    const row = rows[r];
    const where = `${file}:row ${r + 1}`;
    if (row.length < qCol + 5) throw new DataError(`${where}: expected question, A, B, C, D${benchmark === 'ceval' ? ' after the id' : ''}, got ${row.length} columns`);
    const answerText = (row[qCol + 5] ?? '').trim().toUpperCase();
    const answer = answerText === '' ? -1 : LETTERS.indexOf(answerText);
    if (answerText !== '' && answer < 0) throw new DataError(`${where}: answer must be A, B, C or D, got '${row[qCol + 5]}'`);
    items.push({ question: row[qCol], options: row.slice(qCol + 1, qCol + 5), answer });
  }
  if (items.length === 0) throw new DataError(`${file}: no questions`);
  return items;
}

function readItems(benchmark: Benchmark, file: string): BenchmarkItem[] {
  return parseBenchmarkCsv(benchmark, fs.readFileSync(file, 'utf8'), file);
}

/** `<subject>_<split>.csv` → subject and split. */
function nameParts(file: string): { subject: string; split: string } | null {
  const m = /^(.+)_(dev|val|test)\.csv$/.exec(path.basename(file));
  return m ? { subject: m[1], split: m[2] } : null;
}

/** Where the files of one split are: DIR/<split>, DIR/data/<split>, or DIR itself (flat layout). */
function splitDir(root: string, split: Split): string | null {
  for (const d of [path.join(root, split), path.join(root, 'data', split), root]) {
    if (fs.existsSync(d) && fs.statSync(d).isDirectory() && fs.readdirSync(d).some((f) => f.endsWith(`_${split}.csv`))) return d;
  }
  return null;
}

function devFileFor(evalFile: string, subject: string): string | null {
  const dir = path.dirname(evalFile);
  for (const d of [dir, path.join(dir, '..', 'dev')]) {
    const f = path.join(d, `${subject}_dev.csv`);
    if (fs.existsSync(f)) return f;
  }
  return null;
}

export interface LoadOptions {
  split: Split;
  shots: number;
}

/**
 * The subjects under `data` (a directory in one of the layouts above, or one `<subject>_<split>.csv`)
 * with their dev examples. Missing dev files are an error when shots > 0, naming what to do.
 */
export function loadBenchmark(benchmark: Benchmark, data: string, o: LoadOptions): SubjectData[] {
  if (!fs.existsSync(data)) throw new DataError(`${data}: no such file or directory`);
  let files: string[];
  if (fs.statSync(data).isDirectory()) {
    const dir = splitDir(data, o.split);
    if (!dir) throw new DataError(`${data}: no '*_${o.split}.csv' files in ${data}/${o.split}, ${data}/data/${o.split} or ${data} (C-Eval and MMLU ship dev/, val/ and test/ directories; pick another with --split)`);
    files = fs.readdirSync(dir).filter((f) => f.endsWith(`_${o.split}.csv`)).sort().map((f) => path.join(dir, f));
  } else files = [data];
  return files.map((file) => {
    const parts = nameParts(file);
    const subject = parts?.subject ?? path.basename(file, '.csv');
    const items = readItems(benchmark, file);
    const unanswered = items.findIndex((q) => q.answer < 0);
    if (unanswered >= 0) {
      throw new DataError(`${file}: question ${unanswered + 1} has no answer${benchmark === 'ceval' ? " (C-Eval's test answers are not public: score the val split, --split val)" : ''}`);
    }
    let dev: BenchmarkItem[] = [];
    if (o.shots > 0) {
      const devFile = devFileFor(file, subject);
      if (!devFile) throw new DataError(`${file}: ${o.shots}-shot prompts need ${subject}_dev.csv beside it or in ../dev; add it, or use --shots 0`);
      dev = readItems(benchmark, devFile);
      if (dev.some((d) => d.answer < 0)) throw new DataError(`${devFile}: few-shot examples need their answers`);
      if (dev.length < o.shots) throw new DataError(`${devFile}: ${dev.length} examples, fewer than --shots ${o.shots}`);
    }
    return { subject, file, items, dev };
  });
}
