// Multiple-choice scoring: each option is scored by the log-likelihood the model gives it as the
// continuation of the question, as lm-eval-harness does for its loglikelihood tasks. Reading and
// encoding the questions is recipe/multiple-choice.ts.
import type { Device } from '../model/graph/session.ts';
import { frozenWholeModel, type RangeProgram } from '../model/llama/program.ts';
import { optionalTokenizer, type Pretrained } from '../model/hf/pretrained.ts';
import type { TextTokenizer } from '../model/hf/tokenizer.ts';
import { makeBatch } from '../recipe/batch.ts';
import type { Example } from '../recipe/data.ts';
import { chunks } from '../recipe/examples.ts';
import { encodeMcRows, readMcJsonl, type McEncodeOptions, type McQuestion, type McRow } from '../recipe/multiple-choice.ts';

export interface McScoreOptions extends McEncodeOptions {
  /** Rows (options) per forward pass; options of several questions share a batch. Default 16. */
  batchSize?: number;
  padId?: number;
  device?: Device;
  threads?: number;
}

export interface McQuestionScore {
  answer: number;
  /** argmax of the summed log-likelihood. */
  predicted: number;
  /** argmax of the log-likelihood per scored token. */
  predictedNorm: number;
  logliks: number[];
  tokens: number[];
}

export interface McResult {
  accuracy: number;
  /**
   * Accuracy of the per-token log-likelihood. lm-eval-harness divides by the option's length in
   * characters instead (tokenizer-independent); per token is what this project reports.
   */
  accNorm: number;
  questions: number;
  correct: number;
  correctNorm: number;
  scores: McQuestionScore[];
}

/** The weights to score with: a model directory, or in-memory weights (e.g. mid-training). */
export type McModel = Pick<Pretrained, 'config' | 'load'>;

/** Log-likelihood of each row's labelled tokens, batched longest-first to keep padding small. */
export async function rowLogLikelihoods(program: RangeProgram, rows: readonly Example[], batchSize: number, padId = 0): Promise<Float64Array> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batchSize must be a positive integer, got ${batchSize}`);
  const order = rows.map((_, i) => i).sort((a, b) => rows[b].inputIds.length - rows[a].inputIds.length || a - b);
  const out = new Float64Array(rows.length);
  for (const idx of chunks(order, batchSize)) {
    const res = await program.forward(makeBatch(idx.map((i) => rows[i]), { padId }), new Map());
    const rowLoss = res.rowLoss;
    idx.forEach((i, k) => (out[i] = -rowLoss[k]));
  }
  return out;
}

function argmax(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Accuracy from per-row log-likelihoods (rows as encodeMcRows made them). */
export function summarizeMc(questions: readonly McQuestion[], rows: readonly McRow[], logliks: ArrayLike<number>): McResult {
  const scores: McQuestionScore[] = questions.map((q) => ({ answer: q.answer, predicted: 0, predictedNorm: 0, logliks: [], tokens: [] }));
  rows.forEach((r, i) => {
    scores[r.question].logliks[r.option] = logliks[i];
    scores[r.question].tokens[r.option] = r.tokens;
  });
  let correct = 0;
  let correctNorm = 0;
  for (const s of scores) {
    s.predicted = argmax(s.logliks);
    s.predictedNorm = argmax(s.logliks.map((l, i) => l / s.tokens[i]));
    if (s.predicted === s.answer) correct++;
    if (s.predictedNorm === s.answer) correctNorm++;
  }
  const n = questions.length;
  return { accuracy: correct / n, accNorm: correctNorm / n, questions: n, correct, correctNorm, scores };
}

export async function scoreMultipleChoice(model: McModel, tok: TextTokenizer, questions: readonly McQuestion[], o: McScoreOptions = {}): Promise<McResult> {
  if (questions.length === 0) throw new Error('no questions to score');
  const rows = encodeMcRows(questions, tok, { ...o, vocabSize: o.vocabSize ?? model.config.vocabSize });
  const program = await frozenWholeModel(model.config, model.load, { rowLoss: true, device: o.device, threads: o.threads });
  try {
    const logliks = await rowLogLikelihoods(program, rows, o.batchSize ?? 16, o.padId ?? tok.padId ?? model.config.padTokenId ?? 0);
    return summarizeMc(questions, rows, logliks);
  } finally {
    await program.release();
  }
}

/** `propipe eval` on an MC file: read it, load the model's tokenizer, score. */
export async function evaluateMcFile(model: Pretrained, file: string, o: McScoreOptions = {}): Promise<McResult> {
  const questions = await readMcJsonl(file);
  const tok = await optionalTokenizer(model.dir);
  if (!tok) throw new Error(`${file}: multiple-choice questions are text and need a tokenizer, but ${model.dir} has no tokenizer.json`);
  return scoreMultipleChoice(model, tok, questions, o);
}
