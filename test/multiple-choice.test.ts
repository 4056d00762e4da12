// Multiple-choice files: parsing and its errors, row encoding, scoring direction, and `propipe eval`.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { createRandomModel } from '../model/hf/init.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { loadTokenizer, type TextTokenizer } from '../model/hf/tokenizer.ts';
import { IGNORE_INDEX } from '../common/labels.ts';
import { encodeMcRows, isMcFile, parseMcRecord, readMcJsonl } from '../recipe/multiple-choice.ts';
import { scoreMultipleChoice } from '../tasks/multiple-choice.ts';
import { propipe } from './support/cli.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-mc-'));
const modelDir = path.join(tmp, 'model');
let tok: TextTokenizer;
let fileNo = 0;

function jsonl(lines: (string | object)[]): string {
  const file = path.join(tmp, `q${fileNo++}.jsonl`);
  fs.writeFileSync(file, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return file;
}

before(async () => {
  await createRandomModel(modelDir, { layers: 2, hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, vocab: 400, seed: 7 });
  tok = await loadTokenizer(modelDir);
});

describe('parsing', () => {
  test('2..N consecutive options; the answer letter becomes an index', () => {
    assert.deepEqual(parseMcRecord({ question: 'Q?', A: 'yes', B: 'no', answer: 'b' }), { question: 'Q?', options: ['yes', 'no'], answer: 1 });
    const five = parseMcRecord({ id: 3, question: 'Q?', A: 'a', B: 'b', C: 'c', D: 'd', E: 5, answer: 'E', explanation: '...' });
    assert.deepEqual(five.options, ['a', 'b', 'c', 'd', '5']);
    assert.equal(five.answer, 4);
  });

  const bad: [string, object, RegExp][] = [
    ['missing answer', { question: 'Q', A: 'x', B: 'y' }, /missing "answer"/],
    ['answer not an option', { question: 'Q', A: 'x', B: 'y', C: 'z', D: 'w', answer: 'E' }, /one of the option letters A–D, got "E"/],
    ['answer not a letter', { question: 'Q', A: 'x', B: 'y', answer: 1 }, /option letters A–B, got 1/],
    ['one option', { question: 'Q', A: 'x', answer: 'A' }, /at least 2 options/],
    ['gap in letters', { question: 'Q', A: 'x', B: 'y', D: 'w', answer: 'A' }, /"C" is missing but "D" is present/],
    ['empty option', { question: 'Q', A: 'x', B: ' ', answer: 'A' }, /option "B" is empty/],
    ['empty question', { question: '', A: 'x', B: 'y', answer: 'A' }, /"question" must be a non-empty string/],
    ['a training record', { text: 'hello' }, /multiple-choice record/],
  ];
  for (const [name, record, message] of bad) test(`rejects: ${name}`, () => assert.throws(() => parseMcRecord(record), message));

  test('file errors carry file:line; detection looks at the first record', async () => {
    const mc = { question: 'Q', A: 'x', B: 'y', answer: 'A' };
    const file = jsonl([mc, '', { question: 'Q', A: 'x', B: 'y', answer: 'C' }]);
    await assert.rejects(readMcJsonl(file), new RegExp(`${path.basename(file)}:3: "answer" must be`));
    const mixed = jsonl([mc, { text: 'hello' }]);
    await assert.rejects(readMcJsonl(mixed), /:2: .*all multiple-choice or all training records/);
    assert.equal(await isMcFile(file), true);
    assert.equal(await isMcFile(jsonl(['', { text: 'hello' }, mc])), false);
    assert.equal(await isMcFile(jsonl(['not json'])), false);
  });
});

describe('encoding', () => {
  test('only the option tokens are labels; "answer" and "continue" prompts', () => {
    const q = { question: 'The sky is', options: ['blue', 'green'], answer: 0 };
    for (const prompt of ['answer', 'continue'] as const) {
      const rows = encodeMcRows([q], tok, { prompt });
      assert.equal(rows.length, 2);
      const context = [tok.bosId!, ...tok.encode(prompt === 'answer' ? 'The sky is\nAnswer:' : 'The sky is')];
      rows.forEach((r, i) => {
        const cont = tok.encode(' ' + q.options[i]);
        assert.deepEqual(Array.from(r.inputIds), [...context, ...cont]);
        assert.deepEqual(Array.from(r.labels), [...context.map(() => IGNORE_INDEX), ...cont]);
        assert.equal(r.tokens, cont.length);
      });
    }
  });

  test('maxLength drops the oldest prompt tokens and keeps the option whole', () => {
    const q = { question: 'a long question with many words in it', options: ['yes', 'no'], answer: 0 };
    const [full] = encodeMcRows([q], tok);
    const [cut] = encodeMcRows([q], tok, { maxLength: 6 });
    assert.equal(cut.inputIds.length, 6);
    assert.deepEqual(Array.from(cut.inputIds), Array.from(full.inputIds.slice(-6)));
    assert.equal(cut.tokens, full.tokens);
    assert.throws(() => encodeMcRows([q], tok, { maxLength: 1 }), /option alone/);
  });
});

test('scoring picks the highest log-likelihood, not the lowest loss', async () => {
  // A random init predicts almost uniformly, so each token costs ≈ ln(vocab): the one-token option
  // has by far the highest summed log-likelihood wherever it is placed.
  const long = ['zebra crossing over seven hills', 'quietly jumping purple mountains', 'lazy rivers of the distant north'];
  const questions = [0, 1, 2, 3].map((answer) => {
    const options = [...long];
    options.splice(answer, 0, 'a');
    return { question: 'Pick one:', options, answer };
  });
  const r = await scoreMultipleChoice(openPretrained(modelDir), tok, questions, { batchSize: 5 });
  assert.equal(r.accuracy, 1);
  assert.equal(r.questions, 4);
  for (const s of r.scores) {
    assert.equal(s.tokens[s.answer], 1);
    for (const [i, l] of s.logliks.entries()) {
      assert.ok(l < 0, `loglik ${l}`);
      // Near-uniform: ≈ ln(400) ≈ 6 nats per token.
      assert.ok(Math.abs(-l / s.tokens[i] - Math.log(400)) < 0.5, `per-token ${-l / s.tokens[i]}`);
    }
  }
});

test('propipe eval scores an MC file and reports bad lines with file:line', () => {
  const file = jsonl([
    { question: 'The sky is', A: 'blue', B: 'green', C: 'red', answer: 'A' },
    { question: 'Two and two make', A: 'four', B: 'five', answer: 'A' },
  ]);
  const r = propipe(['eval', '--model', modelDir, '--data', file, '--json', '--mc-prompt', 'continue']);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(out).sort(), ['acc_norm', 'accuracy', 'questions']);
  assert.equal(out.questions, 2);
  assert.ok(out.accuracy >= 0 && out.accuracy <= 1 && out.acc_norm >= 0 && out.acc_norm <= 1);

  const bad = jsonl([{ question: 'Q', A: 'x', B: 'y', answer: 'A' }, { question: 'Q', A: 'x', B: 'y' }]);
  const e = propipe(['eval', '--model', modelDir, '--data', bad]);
  assert.equal(e.status, 1);
  assert.match(e.stderr, new RegExp(`${path.basename(bad)}:2: missing "answer"`));
});
