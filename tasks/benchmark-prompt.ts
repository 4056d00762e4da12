// k-shot prompts as the benchmarks define them. The model is then scored on the answer letter that
// follows the prompt (lm-evaluation-harness and the benchmarks' own code compare the letters' logits).
//
// C-Eval (its README, "answer-only" prompt; the letter follows "答案：" directly, as in its code):
//   以下是中国关于{科目}考试的单项选择题，请选出其中的正确答案。\n\n{题目}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n答案：A\n\n … {测试题目}…\n答案：
// MMLU (hendrycks/test evaluate.py as lm-evaluation-harness renders it, one space in the subject):
//   The following are multiple choice questions (with answers) about {subject}.\n\n{q}\nA. {A}\n…\nAnswer: B\n\n … {q}\n…\nAnswer:
import type { BenchmarkItem } from './benchmark-data.ts';
import { subjectLabel, type Benchmark } from './benchmark-subjects.ts';

export const LETTERS = ['A', 'B', 'C', 'D'];

interface Format {
  header: (subject: string) => string;
  answerCue: string;
  /** Text between the cue and the letter, in examples and in the scored continuation. */
  delimiter: string;
}

export const FORMATS: Record<Benchmark, Format> = {
  ceval: { header: (s) => `以下是中国关于${s}考试的单项选择题，请选出其中的正确答案。\n\n`, answerCue: '答案：', delimiter: '' },
  mmlu: { header: (s) => `The following are multiple choice questions (with answers) about ${s}.\n\n`, answerCue: 'Answer:', delimiter: ' ' },
};

function formatItem(f: Format, item: BenchmarkItem, withAnswer: boolean): string {
  const choices = item.options.map((o, i) => `\n${LETTERS[i]}. ${o}`).join('');
  const tail = withAnswer ? `${f.delimiter}${LETTERS[item.answer]}\n\n` : '';
  return `${item.question}${choices}\n${f.answerCue}${tail}`;
}

/** The prompt for `item`: the subject header, the first `shots` dev examples with answers, the question. */
export function buildPrompt(benchmark: Benchmark, subject: string, dev: readonly BenchmarkItem[], shots: number, item: BenchmarkItem): string {
  const f = FORMATS[benchmark];
  return f.header(subjectLabel(benchmark, subject)) + dev.slice(0, shots).map((d) => formatItem(f, d, true)).join('') + formatItem(f, item, false);
}
