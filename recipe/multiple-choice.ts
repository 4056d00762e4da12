// Multiple-choice questions in the C-Eval/MMLU JSONL layout ({"question", "A", "B", ..., "answer"}):
// reading, checking and encoding them as one row per option. Scoring them is tasks/multiple-choice.ts.
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { TextTokenizer } from '../model/hf/tokenizer.ts';
import { DataError, type Example } from './data.ts';
import { IGNORE_INDEX } from '../common/labels.ts';

/** One line of an MC file: options under consecutive capital letters from "A"; `answer` is a letter. */
export interface McRecord {
  question: string;
  answer: string;
  [letter: string]: string;
}

export interface McQuestion {
  question: string;
  options: string[];
  /** Index into `options`. */
  answer: number;
}

/**
 * How question and option become model text: context = question + separator, continuation =
 * delimiter + option. `answer` is the C-Eval/MMLU/ARC style ("…\nAnswer: Paris"); `continue` makes
 * question + " " + option one sentence, for cloze quizzes whose question is a sentence's beginning.
 */
export const MC_PROMPTS = {
  answer: { separator: '\nAnswer:', delimiter: ' ' },
  continue: { separator: '', delimiter: ' ' },
} as const;
export type McPromptStyle = keyof typeof MC_PROMPTS;
export const MC_PROMPT_STYLES = Object.keys(MC_PROMPTS) as McPromptStyle[];

const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
/** Keys of the training formats (recipe/data.ts): a record with any of them is not an MC question. */
const TRAINING_KEYS = ['text', 'instruction', 'output', 'messages', 'input_ids'];

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

export function isMcRecord(record: unknown): boolean {
  if (!record || typeof record !== 'object' || Array.isArray(record)) return false;
  return 'question' in record && !TRAINING_KEYS.some((k) => k in record);
}

/** Checks one parsed record; throws DataError (without a location) saying what is wrong. */
export function parseMcRecord(record: unknown): McQuestion {
  if (!isMcRecord(record)) {
    throw new DataError(`expected a multiple-choice record {"question", "A", "B", ..., "answer"}, got ${record && typeof record === 'object' && !Array.isArray(record) ? `keys [${Object.keys(record).join(', ')}]` : typeName(record)} (a file must be all multiple-choice or all training records)`);
  }
  const rec = record as Record<string, unknown>;
  if (typeof rec.question !== 'string' || rec.question.trim().length === 0) {
    throw new DataError(`"question" must be a non-empty string, got ${JSON.stringify(rec.question)}`);
  }
  const options: string[] = [];
  for (const letter of LETTERS) {
    if (!(letter in rec)) break;
    const v = rec[letter];
    // Some dumps store numeric options (e.g. MMLU arithmetic) as JSON numbers.
    const text = typeof v === 'string' ? v : typeof v === 'number' && Number.isFinite(v) ? String(v) : null;
    if (text === null) throw new DataError(`option "${letter}" must be a string, got ${typeName(v)}`);
    if (text.trim().length === 0) throw new DataError(`option "${letter}" is empty`);
    options.push(text);
  }
  const stray = LETTERS.slice(options.length + 1).split('').find((l) => l in rec);
  if (stray !== undefined) {
    throw new DataError(`option "${LETTERS[options.length]}" is missing but "${stray}" is present; options must be consecutive letters from "A"`);
  }
  if (options.length < 2) throw new DataError(`a question needs at least 2 options ("A", "B", ...), got ${options.length}`);
  const last = LETTERS[options.length - 1];
  if (!('answer' in rec)) throw new DataError(`missing "answer" (a letter A–${last})`);
  const answer = rec.answer;
  const letter = typeof answer === 'string' ? answer.trim().toUpperCase() : '';
  const index = letter.length === 1 ? LETTERS.indexOf(letter) : -1;
  if (index < 0 || index >= options.length) {
    throw new DataError(`"answer" must be one of the option letters A–${last}, got ${JSON.stringify(answer)}`);
  }
  return { question: rec.question, options, answer: index };
}

async function* jsonlLines(file: string): AsyncGenerator<{ line: number; text: string }> {
  const input = createReadStream(file, { encoding: 'utf8' });
  const lines = createInterface({ input, crlfDelay: Infinity });
  let line = 0;
  try {
    for await (const raw of lines) {
      line++;
      const text = line === 1 ? raw.replace(/^\uFEFF/, '') : raw;
      if (text.trim().length > 0) yield { line, text };
    }
  } finally {
    // isMcFile stops after one line; closing readline alone leaves the file open.
    input.destroy();
  }
}

/** Whether the file's first record is an MC question (a file is all MC or all training records). */
export async function isMcFile(file: string): Promise<boolean> {
  for await (const { text } of jsonlLines(file)) {
    try {
      return isMcRecord(JSON.parse(text));
    } catch {
      // Not JSON: the training reader reports it with its line number.
      return false;
    }
  }
  return false;
}

/** Reads an MC JSONL file; the first bad line aborts with file:line and what is wrong. */
export async function readMcJsonl(file: string): Promise<McQuestion[]> {
  const questions: McQuestion[] = [];
  for await (const { line, text } of jsonlLines(file)) {
    let record: unknown;
    try {
      record = JSON.parse(text);
    } catch (err) {
      throw new DataError(`invalid JSON: ${(err as Error).message}`, file, line);
    }
    try {
      questions.push(parseMcRecord(record));
    } catch (err) {
      throw new DataError((err as Error).message, file, line);
    }
  }
  if (questions.length === 0) throw new DataError(`${file}: no questions`);
  return questions;
}

/** One (question, option) pair as a training-style example: only the option's tokens are labels. */
export interface McRow extends Example {
  question: number;
  option: number;
  /** Scored (continuation) tokens. */
  tokens: number;
}

export interface McEncodeOptions {
  prompt?: McPromptStyle;
  /** Overrides the style's text between context and option (C-Eval puts the letter right after "答案："). */
  delimiter?: string;
  /** Keep at most this many tokens per row, dropping the oldest context tokens (as lm-eval does). */
  maxLength?: number;
  /** The model's vocab size, to reject ids the embedding does not have. */
  vocabSize?: number;
}

/**
 * Continuation tokens are whatever the full text adds after the context's tokens, so the option is
 * scored as the tokens the model would see in the joined text; when a merge crosses the boundary
 * the option is encoded on its own instead (the context must stay as the model was prompted).
 */
function continuationIds(tok: TextTokenizer, context: string, contextIds: number[], continuation: string): number[] {
  const whole = tok.encode(context + continuation);
  if (whole.length > contextIds.length && contextIds.every((id, i) => whole[i] === id)) return whole.slice(contextIds.length);
  return tok.encode(continuation);
}

export function encodeMcRows(questions: readonly McQuestion[], tok: TextTokenizer, o: McEncodeOptions = {}): McRow[] {
  const { separator } = MC_PROMPTS[o.prompt ?? 'answer'];
  const delimiter = o.delimiter ?? MC_PROMPTS[o.prompt ?? 'answer'].delimiter;
  const bos = tok.addBos && tok.bosId !== null ? [tok.bosId] : [];
  const rows: McRow[] = [];
  questions.forEach((q, qi) => {
    const context = q.question.trimEnd() + separator;
    const contextIds = tok.encode(context);
    q.options.forEach((opt, oi) => {
      const cont = continuationIds(tok, context, contextIds, delimiter + opt.trim());
      let ctx = [...bos, ...contextIds];
      if (o.maxLength !== undefined && ctx.length + cont.length > o.maxLength) {
        const keep = o.maxLength - cont.length;
        if (keep < 1) throw new DataError(`question ${qi + 1}, option ${LETTERS[oi]}: the option alone has ${cont.length} tokens, more than maxLength ${o.maxLength} allows`);
        ctx = ctx.slice(ctx.length - keep);
      }
      // The first option token is predicted from the last context token, so one must exist.
      if (ctx.length === 0) throw new DataError(`question ${qi + 1}: the prompt encodes to no tokens and the tokenizer adds no bos`);
      const inputIds = Int32Array.from([...ctx, ...cont]);
      const labels = Int32Array.from([...ctx.map(() => IGNORE_INDEX), ...cont]);
      if (o.vocabSize !== undefined) {
        const bad = inputIds.find((id) => id < 0 || id >= o.vocabSize!);
        if (bad !== undefined) throw new DataError(`question ${qi + 1}: token id ${bad} is outside the model's vocabulary [0, ${o.vocabSize})`);
      }
      rows.push({ question: qi, option: oi, inputIds, labels, tokens: cont.length });
    });
  });
  return rows;
}
