// What the study measures of a model: retention (domain A's quiz and held-out perplexity) and
// adaptation (domain B's), scored the same way for every method.
import { openPretrained } from '../model/hf/pretrained.ts';
import { loadTokenizer } from '../model/hf/tokenizer.ts';
import { readJsonl } from '../recipe/data.ts';
import { readMcJsonl } from '../recipe/multiple-choice.ts';
import { evaluateLoss } from '../tasks/evaluate.ts';
import { scoreMultipleChoice } from '../tasks/multiple-choice.ts';
import { DEMO_QUIZ_PROMPT } from '../demo/corpus.ts';

export interface StudyFiles {
  aQuiz: string;
  aValid: string;
  bQuiz: string;
  bValid: string;
}

export interface Scores {
  accuracyA: number;
  accuracyB: number;
  /** Mean token loss on held-out wordings of each domain's facts (perplexity = exp). */
  lossA: number;
  lossB: number;
}

export async function measureModel(dir: string, files: StudyFiles, threads: number): Promise<Scores> {
  const model = openPretrained(dir);
  try {
    const tok = await loadTokenizer(dir);
    const mc = { prompt: DEMO_QUIZ_PROMPT, threads } as const;
    const loss = async (file: string) => (await evaluateLoss(model, (await readJsonl(file, { tokenizer: tok })).examples, { padId: tok.padId ?? 0, threads })).loss;
    return {
      accuracyA: (await scoreMultipleChoice(model, tok, await readMcJsonl(files.aQuiz), mc)).accuracy,
      accuracyB: (await scoreMultipleChoice(model, tok, await readMcJsonl(files.bQuiz), mc)).accuracy,
      lossA: await loss(files.aValid),
      lossB: await loss(files.bValid),
    };
  } finally {
    model.checkpoint.close();
  }
}
