// The demo's generated data: deterministic, quizzes consistent with the facts and the training text,
// domains disjoint; and multiple-choice scoring checked against a hand-computed log-likelihood.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { createRandomModel } from '../model/hf/init.ts';
import { RangeProgram } from '../model/llama/program.ts';
import { wholeModel } from '../model/llama/range-graph.ts';
import { openPretrained, type Pretrained } from '../model/hf/pretrained.ts';
import { loadTokenizer, type TextTokenizer } from '../model/hf/tokenizer.ts';
import { makeBatch } from '../recipe/batch.ts';
import { IGNORE_INDEX } from '../common/labels.ts';
import { corpusForTokenizer, DEMO_QUIZ_PROMPT, DOMAIN_A, DOMAIN_B, writeDemoData, type FactDomain } from '../demo/corpus.ts';
import { parseMcRecord, readMcJsonl, type McQuestion } from '../recipe/multiple-choice.ts';
import { scoreMultipleChoice } from '../tasks/multiple-choice.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-demo-'));
const DOMAINS: [string, FactDomain][] = [
  ['A', DOMAIN_A],
  ['B', DOMAIN_B],
];

const read = (dir: string) => Object.fromEntries(fs.readdirSync(dir).sort().map((f) => [f, fs.readFileSync(path.join(dir, f), 'utf8')]));
const sentencesOf = (texts: { text: string }[]) => new Set(texts.flatMap((r) => r.text.split(/(?<=\.) /)));

describe('generated data', () => {
  test('same seed, same files; another seed reorders training text but keeps facts and held-out text', async () => {
    const [a, b, c] = ['s1', 's1b', 's2'].map((d) => path.join(tmp, d));
    await writeDemoData(a, 1, { aTrain: 300, bTrain: 200 });
    await writeDemoData(b, 1, { aTrain: 300, bTrain: 200 });
    await writeDemoData(c, 2, { aTrain: 300, bTrain: 200 });
    const [fa, fb, fc] = [read(a), read(b), read(c)];
    assert.deepEqual(Object.keys(fa), ['a_quiz.jsonl', 'a_train.jsonl', 'b_quiz.jsonl', 'b_train.jsonl', 'b_valid.jsonl', 'pretrain.jsonl']);
    assert.deepEqual(fa, fb);
    assert.notEqual(fa['a_train.jsonl'], fc['a_train.jsonl']);
    assert.notEqual(fa['b_quiz.jsonl'], fc['b_quiz.jsonl']);
    assert.equal(fa['b_valid.jsonl'], fc['b_valid.jsonl']);
    assert.equal(fa['a_train.jsonl'].trimEnd().split('\n').length, 300);
    // Every quiz line is a valid MC record.
    assert.equal((await readMcJsonl(path.join(a, 'b_quiz.jsonl'))).length, DOMAIN_B.facts.length);
  });

  for (const [name, domain] of DOMAINS) {
    test(`${name}: every fact has a question whose answer is the fact and whose cloze is a training sentence`, () => {
      const quiz = domain.quiz(5);
      const train = sentencesOf(domain.trainTexts(5, 400));
      assert.equal(quiz.length, domain.facts.length);
      quiz.forEach((record, i) => {
        const fact = domain.facts[i];
        const q = parseMcRecord(record);
        assert.equal(q.options[q.answer], fact.object);
        assert.equal(q.options.length, 4);
        assert.equal(new Set(q.options).size, 4, 'options are distinct');
        // Distractors are objects of the same relation, i.e. true of some other subject.
        for (const opt of q.options) assert.ok(domain.facts.some((f) => f.relation === fact.relation && f.object === opt), opt);
        assert.ok(train.has(`${q.question} ${fact.object}.`), `"${q.question} ${fact.object}." is not in the training text`);
        assert.ok(q.question.includes(fact.subject));
      });
    });

    test(`${name}: answer letters are balanced`, () => {
      for (const seed of [1, 2, 3]) {
        const counts = new Map<string, number>();
        for (const r of domain.quiz(seed)) counts.set(r.answer, (counts.get(r.answer) ?? 0) + 1);
        assert.deepEqual([...counts.keys()].sort(), ['A', 'B', 'C', 'D']);
        assert.ok(Math.max(...counts.values()) - Math.min(...counts.values()) <= 1, JSON.stringify([...counts]));
      }
    });

    test(`${name}: training text covers every fact evenly and never contains a held-out sentence`, () => {
      const texts = domain.trainTexts(9, 500);
      const train = sentencesOf(texts);
      const valid = domain.validTexts().map((r) => r.text);
      assert.equal(valid.length, domain.facts.length);
      for (const v of valid) assert.ok(!train.has(v), `held-out "${v}" is in the training text`);
      const all = texts.map((r) => r.text).join(' ');
      const seen = domain.facts.map((f) => all.match(new RegExp(`\\b${f.object}\\b`, 'g'))?.length ?? 0);
      assert.ok(Math.min(...seen) >= 0.5 * Math.max(...seen), `uneven coverage ${seen}`);
    });
  }

  test('the domains share no entity names', () => {
    const a = new Set([...DOMAIN_A.entities()].map((e) => e.toLowerCase()));
    const shared = [...DOMAIN_B.entities()].filter((e) => a.has(e.toLowerCase()));
    assert.deepEqual(shared, []);
    assert.equal(corpusForTokenizer().length, 2 * 36 * 4);
  });
});

describe('scoring the demo quizzes', () => {
  const modelDir = path.join(tmp, 'model');
  let model: Pretrained;
  let tok: TextTokenizer;
  let questions: McQuestion[];

  before(async () => {
    // A larger init std than HF's makes the random model's predictions peaked, so option scores
    // differ by more than their token counts and the argmax check below means something.
    await createRandomModel(modelDir, { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, vocab: 512, seed: 11, initStd: 0.3, corpus: corpusForTokenizer() });
    model = openPretrained(modelDir);
    tok = await loadTokenizer(modelDir);
    questions = [...DOMAIN_A.quiz(3), ...DOMAIN_B.quiz(3)].map(parseMcRecord);
  });

  /** Σ log p(option token | everything before), from the logits of a one-row forward. */
  async function manualLoglik(program: RangeProgram, question: string, option: string): Promise<number> {
    const context = [tok.bosId!, ...tok.encode(question)];
    const cont = tok.encode(' ' + option);
    const ids = Int32Array.from([...context, ...cont]);
    const labels = Int32Array.from([...context.map(() => IGNORE_INDEX), ...cont]);
    const out = await program.forward(makeBatch([{ inputIds: ids, labels }]), new Map());
    const logits = out.logits;
    const v = model.config.vocabSize;
    let sum = 0;
    for (let t = context.length; t < ids.length; t++) {
      const row = logits.subarray((t - 1) * v, t * v);
      let max = -Infinity;
      for (const x of row) max = Math.max(max, x);
      let z = 0;
      for (const x of row) z += Math.exp(x - max);
      sum += row[ids[t]] - max - Math.log(z);
    }
    return sum;
  }

  test('batched row losses equal a hand-computed log-likelihood, and the prediction is its argmax', async () => {
    const r = await scoreMultipleChoice(model, tok, questions, { prompt: DEMO_QUIZ_PROMPT, batchSize: 7 });
    const program = await RangeProgram.create({ config: model.config, range: wholeModel(model.config), trainable: new Set(), load: model.load, inputGrad: false, logits: true });
    // Questions whose prediction token counts alone do not decide (ties in length, or a longer winner).
    let decidedByScores = 0;
    try {
      for (const [qi, q] of questions.entries()) {
        const manual: number[] = [];
        for (const opt of q.options) manual.push(await manualLoglik(program, q.question, opt));
        const s = r.scores[qi];
        manual.forEach((m, i) => assert.ok(Math.abs(m - s.logliks[i]) < 1e-3 * (1 + Math.abs(m)), `q${qi} option ${i}: ${s.logliks[i]} vs manual ${m}`));
        const best = manual.indexOf(Math.max(...manual));
        assert.equal(s.predicted, best, `q${qi}`);
        const perToken = manual.map((m, i) => m / s.tokens[i]);
        assert.equal(s.predictedNorm, perToken.indexOf(Math.max(...perToken)), `q${qi} (norm)`);
        const shortest = Math.min(...s.tokens);
        if (s.tokens[best] > shortest || s.tokens.filter((n) => n === shortest).length > 1) decidedByScores++;
      }
    } finally {
      await program.release();
    }
    assert.ok(decidedByScores >= 10, `only ${decidedByScores} predictions depended on more than option length`);
  });

  test('a random model scores near chance', async () => {
    const r = await scoreMultipleChoice(model, tok, questions, { prompt: DEMO_QUIZ_PROMPT });
    assert.equal(r.questions, 72);
    // Chance is 1/4; ±3σ of a binomial over 72 questions is about ±0.15.
    for (const acc of [r.accuracy, r.accNorm]) assert.ok(acc >= 0.1 && acc <= 0.4, `accuracy ${acc}`);
  });
});
