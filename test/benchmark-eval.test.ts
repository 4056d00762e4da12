// C-Eval / MMLU evaluation: the CSV layouts, the prompts the benchmarks document, letter scoring
// checked against the model's own logits, the per-subject/category/overall report, and `propipe eval --task`.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { createRandomModel } from '../model/hf/init.ts';
import { frozenWholeModel } from '../model/llama/program.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { loadTokenizer } from '../model/hf/tokenizer.ts';
import { makeBatch } from '../recipe/batch.ts';
import { IGNORE_INDEX } from '../common/labels.ts';
import { loadBenchmark, parseBenchmarkCsv } from '../tasks/benchmark-data.ts';
import { benchmarkQuestions, evaluateBenchmark, summarizeBenchmark } from '../tasks/benchmark-eval.ts';
import { buildPrompt } from '../tasks/benchmark-prompt.ts';
import { propipe } from './support/cli.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-'));
const write = (rel: string, text: string) => {
  const f = path.join(tmp, rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, text);
  return f;
};

// C-Eval's README shows this high_school_chemistry question (dev split, with an explanation).
const CEVAL_Q = '25 °C时，将pH=2的强酸溶液与pH=13的强碱溶液混合，所得混合液的pH=11，则强酸溶液与强碱溶液 的体积比是(忽略混合后溶液的体积变化)____';
const CEVAL_DEV =
  '\uFEFFid,question,A,B,C,D,answer,explanation\n' +
  `0,${CEVAL_Q},11:1,9:1,1:11,1:9,B,"1. pH=13的强碱溶液中c(OH-)=0.1mol/L, pH=2的强酸溶液中c(H+)=0.01mol/L，\n2. 酸碱混合后pH=11，即c(OH-)=0.001mol/L。"\n`;
const CEVAL_VAL = 'id,question,A,B,C,D,answer\n0,"下列说法正确的是____","甲, 乙","""丙""",丁,戊,C\n1,水的化学式是____,H2O,CO2,O2,N2,A\n';
// The first question of MMLU's abstract_algebra_dev.csv (no header, as MMLU ships it).
const MMLU_DEV = 'Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.,0,1,2,3,B\n';
const MMLU_TEST = '"Statement 1 | Every group of order 4 is cyclic, ""really"".",True,False,"True, False",None,B\nWhat is 2+2?,3,4,5,6,B\n';

describe('the benchmarks’ CSV files', () => {
  test('RFC 4180 quoting, BOM, header handling and answers', () => {
    const dev = parseBenchmarkCsv('ceval', CEVAL_DEV, 'x_dev.csv');
    assert.deepEqual(dev, [{ question: CEVAL_Q, options: ['11:1', '9:1', '1:11', '1:9'], answer: 1 }]);
    const val = parseBenchmarkCsv('ceval', CEVAL_VAL, 'x_val.csv');
    assert.deepEqual(val[0], { question: '下列说法正确的是____', options: ['甲, 乙', '"丙"', '丁', '戊'], answer: 2 });
    const mmlu = parseBenchmarkCsv('mmlu', MMLU_TEST, 'y_test.csv');
    assert.equal(mmlu.length, 2, 'MMLU files have no header: the first row is a question');
    assert.deepEqual(mmlu[0].options, ['True', 'False', 'True, False', 'None']);
    assert.equal(mmlu[0].question, 'Statement 1 | Every group of order 4 is cyclic, "really".');
    assert.equal(parseBenchmarkCsv('mmlu', 'question,A,B,C,D,answer\n' + MMLU_DEV, 'z.csv').length, 1, 'a header row (HF exports) is skipped');
  });

  test('bad files are named with the row and what to do', () => {
    assert.throws(() => parseBenchmarkCsv('ceval', MMLU_DEV, 'a_val.csv'), /a_val\.csv: a C-Eval file starts with the header id,question,A,B,C,D,answer.*use --task mmlu/);
    assert.throws(() => parseBenchmarkCsv('mmlu', 'q,a,b,c,d,E\n', 'b_test.csv'), /b_test\.csv:row 1: answer must be A, B, C or D, got 'E'/);
    assert.throws(() => parseBenchmarkCsv('mmlu', 'q,a,b\n', 'c_test.csv'), /c_test\.csv:row 1: expected question, A, B, C, D, got 3 columns/);
    assert.throws(() => parseBenchmarkCsv('mmlu', '"unterminated,a,b,c,d,A\n', 'd_test.csv'), /d_test\.csv: not valid CSV/);
  });

  test('layouts: split directories, data/<split>, a single file; dev found beside or in ../dev', () => {
    write('ceval/dev/high_school_chemistry_dev.csv', CEVAL_DEV);
    write('ceval/val/high_school_chemistry_val.csv', CEVAL_VAL);
    write('ceval/test/high_school_chemistry_test.csv', 'id,question,A,B,C,D\n0,q,a,b,c,d\n');
    write('mmlu/data/dev/abstract_algebra_dev.csv', MMLU_DEV);
    write('mmlu/data/test/abstract_algebra_test.csv', MMLU_TEST);
    const ceval = loadBenchmark('ceval', path.join(tmp, 'ceval'), { split: 'val', shots: 1 });
    assert.deepEqual(ceval.map((s) => [s.subject, s.items.length, s.dev.length]), [['high_school_chemistry', 2, 1]]);
    const mmlu = loadBenchmark('mmlu', path.join(tmp, 'mmlu'), { split: 'test', shots: 1 });
    assert.deepEqual(mmlu.map((s) => [s.subject, s.items.length, s.dev.length]), [['abstract_algebra', 2, 1]]);
    const one = loadBenchmark('mmlu', path.join(tmp, 'mmlu/data/test/abstract_algebra_test.csv'), { split: 'test', shots: 1 });
    assert.equal(one[0].dev.length, 1);
    assert.throws(() => loadBenchmark('ceval', path.join(tmp, 'ceval'), { split: 'test', shots: 0 }), /no answer \(C-Eval's test answers are not public: score the val split, --split val\)/);
    assert.throws(() => loadBenchmark('mmlu', path.join(tmp, 'mmlu'), { split: 'test', shots: 2 }), /1 examples, fewer than --shots 2/);
    write('lonely/x_val.csv', CEVAL_VAL);
    assert.throws(() => loadBenchmark('ceval', path.join(tmp, 'lonely'), { split: 'val', shots: 5 }), /need x_dev\.csv beside it or in \.\.\/dev; add it, or use --shots 0/);
    assert.equal(loadBenchmark('ceval', path.join(tmp, 'lonely'), { split: 'val', shots: 0 })[0].items.length, 2, 'a flat directory works');
    assert.throws(() => loadBenchmark('mmlu', path.join(tmp, 'ceval'), { split: 'test', shots: 0 }), /high_school_chemistry_test\.csv: starts with C-Eval's header .*use --task ceval/);
  });
});

describe('prompts as the benchmarks document them', () => {
  test('C-Eval: the README’s answer-only prompt with the subject’s Chinese name, letter right after 答案：', () => {
    const [dev] = parseBenchmarkCsv('ceval', CEVAL_DEV, 'dev.csv');
    const item = { question: '水的化学式是____', options: ['H2O', 'CO2', 'O2', 'N2'], answer: 0 };
    const expected =
      '以下是中国关于高中化学考试的单项选择题，请选出其中的正确答案。\n\n' +
      `${CEVAL_Q}\nA. 11:1\nB. 9:1\nC. 1:11\nD. 1:9\n答案：B\n\n` +
      '水的化学式是____\nA. H2O\nB. CO2\nC. O2\nD. N2\n答案：';
    assert.equal(buildPrompt('ceval', 'high_school_chemistry', [dev], 5, item), expected);
    assert.equal(buildPrompt('ceval', 'high_school_chemistry', [dev], 0, item), '以下是中国关于高中化学考试的单项选择题，请选出其中的正确答案。\n\n水的化学式是____\nA. H2O\nB. CO2\nC. O2\nD. N2\n答案：');
  });

  test('MMLU: "The following are multiple choice questions (with answers) about …", "Answer: B" examples', () => {
    const [dev] = parseBenchmarkCsv('mmlu', MMLU_DEV, 'dev.csv');
    const item = { question: 'What is 2+2?', options: ['3', '4', '5', '6'], answer: 1 };
    const expected =
      'The following are multiple choice questions (with answers) about abstract algebra.\n\n' +
      'Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n' +
      'What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:';
    assert.equal(buildPrompt('mmlu', 'abstract_algebra', [dev], 5, item), expected);
  });
});

test('per subject, per category and overall: question-weighted and subject-mean accuracy', () => {
  const subjects = ['computer_network', 'college_physics', 'law', 'my_own_subject'].map((subject) => ({ subject, file: '', items: [], dev: [] }));
  const subjectOf = [0, 0, 0, 0, 1, 2, 2, 3];
  const answers = [0, 1, 2, 3, 0, 1, 1, 2];
  const predicted = [0, 1, 2, 0, 1, 1, 0, 2];
  const r = summarizeBenchmark('ceval', 'val', 5, subjects, subjectOf, predicted, answers);
  assert.deepEqual(r.subjects.computer_network, { correct: 3, questions: 4, accuracy: 0.75, category: 'STEM' });
  assert.deepEqual(r.subjects.law, { correct: 1, questions: 2, accuracy: 0.5, category: 'Humanities' });
  assert.deepEqual(r.categories.STEM, { correct: 3, questions: 5, accuracy: 0.6, subjectMean: 0.375, subjects: 2 });
  assert.equal(r.subjects.my_own_subject.category, '(not a benchmark subject)');
  assert.deepEqual(r.overall, { correct: 5, questions: 8, accuracy: 5 / 8, subjectMean: (0.75 + 0 + 0.5 + 1) / 4, subjects: 4 });
});

describe('scoring with a model', () => {
  const modelDir = path.join(tmp, 'model');
  before(() => createRandomModel(modelDir, { layers: 2, hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, vocab: 400, seed: 2, initStd: 0.5 }));

  test('the chosen letter is the one whose tokens the model finds likeliest after the prompt (checked on raw logits)', async () => {
    const model = openPretrained(modelDir);
    const tok = await loadTokenizer(modelDir);
    // Four copies of the data, the answers all A in one, all B in the next…: the copy in which a
    // question is scored correct reveals the letter the evaluator chose.
    const qs = ['What is 2+2?,3,4,5,6', 'Which is a colour?,red,run,rain,rope', 'Pick the prime.,4,6,7,9', 'Largest planet?,Mars,Venus,Jupiter,Earth'];
    const runs = new Map<string, Awaited<ReturnType<typeof evaluateBenchmark>>>();
    for (const L of 'ABCD') {
      qs.forEach((q, k) => write(`probe${L}/test/q${k}_test.csv`, `${q},${L}\n`));
      runs.set(L, await evaluateBenchmark(model, tok, 'mmlu', path.join(tmp, `probe${L}`), { shots: 0 }));
    }
    const chosen = qs.map((_, k) => 'ABCD'.split('').find((L) => runs.get(L)!.subjects[`q${k}`].correct === 1));
    assert.ok(chosen.every((c) => c !== undefined), 'exactly one letter per question is chosen');

    // The same choice from the full logits: the summed log-softmax of each letter's tokens after the prompt.
    const program = await frozenWholeModel(model.config, model.load, { logits: true });
    const bos = tok.addBos && tok.bosId !== null ? [tok.bosId] : [];
    const v = model.config.vocabSize;
    const expected: string[] = [];
    for (const [k, q] of qs.entries()) {
      const prompt = buildPrompt('mmlu', `q${k}`, [], 0, parseBenchmarkCsv('mmlu', `${q},A\n`, 'p.csv')[0]);
      const ctx = [...bos, ...tok.encode(prompt)];
      const logliks: number[] = [];
      for (const letter of 'ABCD') {
        const cont = tok.encode(prompt + ' ' + letter).slice(ctx.length - bos.length);
        const ids = Int32Array.from([...ctx, ...cont]);
        const out = await program.forward(makeBatch([{ inputIds: ids, labels: Int32Array.from(ids, () => IGNORE_INDEX) }]), new Map());
        const logits = out.logits;
        let ll = 0;
        cont.forEach((id, j) => {
          const row = logits.subarray((ctx.length - 1 + j) * v, (ctx.length + j) * v);
          const max = Math.max(...row);
          ll += row[id] - max - Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
        });
        logliks.push(ll);
      }
      expected.push('ABCD'[logliks.indexOf(Math.max(...logliks))]);
    }
    await program.release();
    assert.deepEqual(chosen, expected);
    assert.ok(new Set(expected).size > 1, `a random model should not prefer one letter everywhere: ${expected}`);
  });

  test('propipe eval --task prints the table and --json the numbers; bad flags are named', () => {
    const t = propipe(['eval', '--model', modelDir, '--task', 'ceval', '--data', path.join(tmp, 'ceval'), '--shots', '1']);
    assert.equal(t.status, 0, t.stderr);
    assert.match(t.stdout, /high_school_chemistry\s+STEM\s+2\s+\d+\.\d\d%/);
    assert.match(t.stdout, /\[overall\] ceval val, 1-shot\s+1 subjects\s+2\s+/);
    const j = propipe(['eval', '--model', modelDir, '--task', 'mmlu', '--data', path.join(tmp, 'mmlu'), '--shots', '1', '--json']);
    assert.equal(j.status, 0, j.stderr);
    const r = JSON.parse(j.stdout);
    assert.equal(r.overall.questions, 2);
    assert.equal(r.categories.STEM.questions, 2);
    const bad = propipe(['eval', '--model', modelDir, '--task', 'cmmlu', '--data', tmp]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--task must be ceval or mmlu, got 'cmmlu'/);
  });
});
