import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { trainByteLevelBpe } from '../model/hf/bpe-train.ts';
import type { BpeTrainResult } from '../model/hf/bpe-train.ts';
import { tokenizerFromJson } from '../model/hf/tokenizer.ts';
import type { TextTokenizer } from '../model/hf/tokenizer.ts';
import { batchesPerEpoch, epochOrder, makeBatch, shuffledBatches } from '../recipe/batch.ts';
import type { BatchPosition } from '../recipe/batch.ts';
import { alpacaPrompt, DataError, encodeRecord, readJsonl } from '../recipe/data.ts';
import { IGNORE_INDEX } from '../common/labels.ts';
import type { Example, ReadJsonlOptions } from '../recipe/data.ts';
import { Rng } from '../common/rng.ts';

const M = IGNORE_INDEX;
let dir: string;
let tok: TextTokenizer;
let trained: BpeTrainResult;
let fileNo = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'propipe-data-'));
  trained = trainByteLevelBpe(null, 600);
  tok = tokenizerFromJson(trained.tokenizerJson, trained.tokenizerConfig);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function jsonl(lines: (string | object)[]): Promise<string> {
  const path = join(dir, `d${fileNo++}.jsonl`);
  await writeFile(path, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return path;
}

async function load(lines: (string | object)[], options: ReadJsonlOptions = {}) {
  return readJsonl(await jsonl(lines), { tokenizer: tok, ...options });
}

const ids = (e: Example) => Array.from(e.inputIds);
const labels = (e: Example) => Array.from(e.labels);
const masked = (n: number) => new Array<number>(n).fill(M);

describe('record formats', () => {
  test('text: bos + text + eos, every token a target', async () => {
    const { examples, stats } = await load([{ text: 'the river town' }]);
    const expected = [tok.bosId!, ...tok.encode('the river town'), tok.eosId!];
    assert.equal(examples.length, 1);
    assert.deepEqual(ids(examples[0]), expected);
    assert.deepEqual(labels(examples[0]), expected);
    assert.equal(stats.formats.text, 1);
    assert.equal(stats.targetTokens, expected.length - 1);
  });

  test('alpaca: prompt masked, output + eos are targets', async () => {
    const { examples } = await load([
      { instruction: 'Add the numbers.', input: '2 and 3', output: 'Five.' },
      { instruction: 'Say hi.', output: 'hi' },
    ]);
    const withInput = tok.encode(alpacaPrompt('Add the numbers.', '2 and 3'));
    const answer = [...tok.encode('Five.'), tok.eosId!];
    assert.deepEqual(ids(examples[0]), [tok.bosId!, ...withInput, ...answer]);
    assert.deepEqual(labels(examples[0]), [...masked(1 + withInput.length), ...answer]);
    assert.match(alpacaPrompt('Add the numbers.', '2 and 3'), /### Input:\n2 and 3\n\n### Response:\n$/);
    assert.doesNotMatch(alpacaPrompt('Say hi.'), /### Input/);
    const plain = tok.encode(alpacaPrompt('Say hi.'));
    assert.deepEqual(labels(examples[1]), [...masked(1 + plain.length), ...tok.encode('hi'), tok.eosId!]);
    assert.equal(tok.decode(ids(examples[1]).filter((_, i) => labels(examples[1])[i] !== M)), 'hi</s>');
  });

  test('chat: only assistant turns (with their end marker) are targets', async () => {
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi?' },
      { role: 'assistant', content: 'Hello.' },
      { role: 'user', content: 'Bye?' },
      { role: 'assistant', content: 'Bye.' },
    ];
    const { examples } = await load([{ messages }]);
    const e = examples[0];
    const p1 = tok.encode('<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n');
    const a1 = tok.encode('Hello.<|im_end|>\n');
    const p2 = tok.encode('<|im_start|>user\nBye?<|im_end|>\n<|im_start|>assistant\n');
    const a2 = tok.encode('Bye.<|im_end|>\n');
    assert.deepEqual(ids(e), [...p1, ...a1, ...p2, ...a2]);
    assert.deepEqual(labels(e), [...masked(p1.length), ...a1, ...masked(p2.length), ...a2]);
    // Tokenizing the pieces separately agrees with tokenizing the whole rendering for this template.
    assert.deepEqual(ids(e), tok.encode(tok.applyChatTemplate(messages)));
    assert.equal(ids(e)[0], tok.bosId);
  });

  test('chat: a trailing user turn and a template with a generation-only suffix', async () => {
    const think = tokenizerFromJson(trained.tokenizerJson, {
      ...trained.tokenizerConfig,
      chat_template:
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}{% if add_generation_prompt %}<assistant>[think]{% endif %}",
    });
    const { examples } = await load(
      [{ messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }, { role: 'user', content: 'more' }] }],
      { tokenizer: think },
    );
    const e = examples[0];
    const prompt = think.encode('<user>q</user><assistant>');
    const reply = think.encode('a</assistant>');
    const tail = think.encode('<user>more</user>');
    assert.deepEqual(ids(e), [...prompt, ...reply, ...tail]);
    assert.deepEqual(labels(e), [...masked(prompt.length), ...reply, ...masked(tail.length)]);
  });

  test('pre-tokenized: labels default to input_ids, -100 allowed, no tokenizer needed', async () => {
    const { examples, stats } = await load(
      [
        { input_ids: [5, 6, 7, 8] },
        { input_ids: [9, 10, 11], labels: [-100, 10, 11] },
      ],
      { tokenizer: null, vocabSize: 12 },
    );
    assert.deepEqual(ids(examples[0]), [5, 6, 7, 8]);
    assert.deepEqual(labels(examples[0]), [5, 6, 7, 8]);
    assert.deepEqual(labels(examples[1]), [-100, 10, 11]);
    assert.equal(stats.formats.tokens, 2);
  });

  test('formats may be mixed in one file; blank lines are skipped', async () => {
    const { examples, stats } = await load([
      { text: 'one' },
      '',
      { instruction: 'two', output: 'three' },
      '   ',
      { messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }] },
      { input_ids: [1, 2, 3] },
    ]);
    assert.equal(examples.length, 4);
    assert.deepEqual(stats.formats, { text: 1, alpaca: 1, chat: 1, tokens: 1 });
    assert.equal(stats.lines, 4);
  });

  test('alpaca dumps carrying an extra "text" field are still read as alpaca', () => {
    const { format } = encodeRecord({ instruction: 'i', input: '', output: 'o', text: 'whole prompt' }, { tokenizer: tok });
    assert.equal(format, 'alpaca');
  });
});

describe('truncation and dropping', () => {
  test('keeps the beginning and drops examples left without targets', async () => {
    const long = { input_ids: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] };
    const noTargetAfterCut = { input_ids: [1, 2, 3, 4, 5, 6], labels: [M, M, M, M, 5, 6] };
    const onlyFirstLabel = { input_ids: [1, 2, 3], labels: [1, M, M] };
    const { examples, stats } = await load([long, noTargetAfterCut, onlyFirstLabel], { tokenizer: null, maxLength: 4 });
    assert.equal(examples.length, 1);
    assert.deepEqual(ids(examples[0]), [1, 2, 3, 4]);
    assert.deepEqual(labels(examples[0]), [1, 2, 3, 4]);
    assert.equal(stats.truncated, 2);
    // labels[0] has no prediction after the shift, so [1, -100, -100] has no target either.
    assert.equal(stats.dropped, 2);
    assert.equal(stats.examples, 1);
    assert.equal(stats.targetTokens, 3);
  });
});

describe('bad lines', () => {
  async function failure(lines: (string | object)[], options: ReadJsonlOptions = {}): Promise<DataError> {
    const path = await jsonl(lines);
    try {
      await readJsonl(path, { tokenizer: tok, ...options });
    } catch (err) {
      assert.ok(err instanceof DataError, `expected DataError, got ${err}`);
      assert.ok(err.message.startsWith(`${path}:`), err.message);
      assert.equal(err.file, path);
      return err;
    }
    assert.fail('expected readJsonl to throw');
  }

  test('invalid JSON names the physical line', async () => {
    const err = await failure([{ text: 'ok' }, '', '{"text": "unterminated']);
    assert.equal(err.line, 3);
    assert.match(err.message, /:3: invalid JSON/);
  });

  test('unknown format lists the keys it saw', async () => {
    const err = await failure([{ prompt: 'a', completion: 'b' }]);
    assert.equal(err.line, 1);
    assert.match(err.message, /unknown record format with keys \["prompt", "completion"\]/);
  });

  test('non-object JSON', async () => {
    assert.match((await failure(['[1, 2]'])).message, /:1: expected a JSON object, got array/);
  });

  test('wrong types', async () => {
    assert.match((await failure([{ text: 5 }])).message, /"text" must be a string, got number/);
    assert.match((await failure([{ instruction: 'x' }])).message, /"output" must be a string, got undefined/);
    assert.match((await failure([{ messages: [{ role: 'user', content: ['x'] }] }])).message, /messages\[0\]\.content must be a string, got array/);
    assert.match((await failure([{ messages: 'hi' }])).message, /"messages" must be an array/);
    assert.match((await failure([{ input_ids: [1, 2.5] }], { tokenizer: null })).message, /input_ids\[1\] must be an integer, got 2\.5/);
    assert.match((await failure([{ input_ids: '1 2' }], { tokenizer: null })).message, /"input_ids" must be an array of integers/);
  });

  test('empty text', async () => {
    const err = await failure([{ text: 'fine' }, { text: '' }]);
    assert.equal(err.line, 2);
    assert.match(err.message, /empty "text"/);
  });

  test('label length mismatch', async () => {
    const err = await failure([{ input_ids: [1, 2, 3], labels: [1, 2] }], { tokenizer: null });
    assert.match(err.message, /"labels" has 2 entries but "input_ids" has 3/);
  });

  test('ids out of range', async () => {
    assert.match((await failure([{ input_ids: [1, 12] }], { tokenizer: null, vocabSize: 12 })).message, /input_ids\[1\] = 12 is outside the vocabulary \[0, 12\)/);
    assert.match((await failure([{ input_ids: [-1, 2] }], { tokenizer: null, vocabSize: 12 })).message, /input_ids\[0\] = -1/);
    assert.match((await failure([{ input_ids: [1, 2], labels: [1, -5] }], { tokenizer: null, vocabSize: 12 })).message, /labels\[1\] = -5 .* not -100/);
    // With a tokenizer and no explicit vocab size, the tokenizer's bounds apply.
    assert.match((await failure([{ input_ids: [1, tok.vocabSize] }])).message, /outside the vocabulary/);
  });

  test('text data without a tokenizer says pre-tokenized data works', async () => {
    const err = await failure([{ input_ids: [1, 2] }, { text: 'hello' }], { tokenizer: null });
    assert.equal(err.line, 2);
    assert.match(err.message, /text records need a tokenizer/);
    assert.match(err.message, /input_ids/);
  });

  test('chat data with a tokenizer that has no template', async () => {
    const { chat_template: _drop, ...config } = trained.tokenizerConfig;
    const bare = tokenizerFromJson(trained.tokenizerJson, config);
    const err = await failure([{ messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }] }], { tokenizer: bare });
    assert.match(err.message, /chat template/);
  });
});

describe('makeBatch', () => {
  test('right-pads ids with the pad id and labels with -100; counts shifted targets', () => {
    const a: Example = { inputIds: Int32Array.from([10, 11, 12]), labels: Int32Array.from([M, 11, 12]) };
    const b: Example = { inputIds: Int32Array.from([20, 21, 22, 23, 24]), labels: Int32Array.from([20, M, 22, 23, 24]) };
    const batch = makeBatch([a, b], { padId: 2 });
    assert.equal(batch.batch, 2);
    assert.equal(batch.seq, 5);
    assert.deepEqual(Array.from(batch.inputIds, Number), [10, 11, 12, 2, 2, 20, 21, 22, 23, 24]);
    assert.deepEqual(Array.from(batch.labels, Number), [M, 11, 12, M, M, 20, M, 22, 23, 24]);
    // Row a: positions 1,2. Row b: positions 3,4 and 2 (position 0's label is never predicted).
    assert.equal(batch.targetTokens, 5);
    assert.ok(batch.inputIds instanceof BigInt64Array && batch.labels instanceof BigInt64Array);
  });

  test('pads to a fixed length when asked, and defaults the pad id to 0', () => {
    const batch = makeBatch([{ inputIds: Int32Array.from([7, 8]), labels: Int32Array.from([7, 8]) }], { seq: 4 });
    assert.deepEqual(Array.from(batch.inputIds, Number), [7, 8, 0, 0]);
    assert.deepEqual(Array.from(batch.labels, Number), [7, 8, M, M]);
    assert.equal(batch.targetTokens, 1);
    assert.throws(() => makeBatch([{ inputIds: Int32Array.from([1, 2, 3]), labels: Int32Array.from([1, 2, 3]) }], { seq: 2 }), /shorter/);
    assert.throws(() => makeBatch([]), /at least one/);
  });
});

describe('shuffledBatches', () => {
  // Row r of the data set is [r, r+1]: the first id identifies the example in a batch.
  const data: Example[] = Array.from({ length: 10 }, (_, r) => ({ inputIds: Int32Array.from([r, r + 1]), labels: Int32Array.from([r, r + 1]) }));
  const rowsOf = (b: { inputIds: BigInt64Array; batch: number; seq: number }) =>
    Array.from({ length: b.batch }, (_, r) => Number(b.inputIds[r * b.seq]));

  function take(n: number, opts: Parameters<typeof shuffledBatches>[1]) {
    const out: { epoch: number; index: number; rows: number[]; next: BatchPosition }[] = [];
    for (const b of shuffledBatches(data, opts)) {
      out.push({ epoch: b.epoch, index: b.index, rows: rowsOf(b), next: b.next });
      if (out.length === n) break;
    }
    return out;
  }

  test('same seed, same order; another seed, another order', () => {
    const a = take(9, { batchSize: 3, seed: 42 });
    assert.deepEqual(a, take(9, { batchSize: 3, seed: 42 }));
    assert.notDeepEqual(a.map((b) => b.rows), take(9, { batchSize: 3, seed: 43 }).map((b) => b.rows));
  });

  test('each epoch is a permutation; epochs differ; dropLast keeps batches full', () => {
    assert.equal(batchesPerEpoch(10, 3), 3);
    assert.equal(batchesPerEpoch(10, 3, false), 4);
    const full = take(8, { batchSize: 3, seed: 7, dropLast: false });
    const epoch0 = full.filter((b) => b.epoch === 0);
    assert.deepEqual(epoch0.map((b) => b.rows.length), [3, 3, 3, 1]);
    assert.deepEqual(epoch0.flatMap((b) => b.rows).sort((x, y) => x - y), [...Array(10).keys()]);
    assert.deepEqual(epoch0.flatMap((b) => b.rows), Array.from(epochOrder(10, 7, 0)));
    assert.notDeepEqual(Array.from(epochOrder(10, 7, 0)), Array.from(epochOrder(10, 7, 1)));
    const dropped = take(6, { batchSize: 3, seed: 7 });
    assert.deepEqual(dropped.map((b) => [b.epoch, b.index]), [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]);
    assert.ok(dropped.every((b) => b.rows.length === 3));
  });

  test('resuming from a stored position continues the same stream', () => {
    const whole = take(10, { batchSize: 3, seed: 5 });
    const stored = whole[4].next; // checkpoint after the fifth batch
    assert.deepEqual(stored, { epoch: 1, index: 2 });
    const resumed = take(5, { batchSize: 3, seed: 5, start: stored });
    assert.deepEqual(resumed, whole.slice(5));
    // An end-of-epoch position rolls over to the next epoch.
    assert.deepEqual(take(1, { batchSize: 3, seed: 5, start: { epoch: 0, index: 3 } })[0], whole[3]);
    assert.throws(() => take(1, { batchSize: 3, seed: 5, start: { epoch: 0, index: 4 } }), /invalid resume position/);
  });

  test('stops after the requested epochs and rejects too little data', () => {
    assert.equal(take(100, { batchSize: 4, seed: 1, epochs: 2 }).length, 4);
    assert.throws(() => take(1, { batchSize: 11, seed: 1 }), /do not fill one batch/);
  });

  test('uses the pad id for shorter rows', () => {
    const mixed: Example[] = [
      { inputIds: Int32Array.from([1]), labels: Int32Array.from([1]) },
      { inputIds: Int32Array.from([1, 2, 3]), labels: Int32Array.from([1, 2, 3]) },
    ];
    const [b] = shuffledBatches(mixed, { batchSize: 2, seed: 0, padId: 9, epochs: 1 });
    assert.equal(b.seq, 3);
    assert.equal(Array.from(b.inputIds, Number).filter((x) => x === 9).length, 2);
  });
});

describe('Rng', () => {
  test('is deterministic and restores from its state', () => {
    const a = new Rng(123);
    const first = Array.from({ length: 5 }, () => a.nextUint32());
    assert.deepEqual(first, Array.from({ length: 5 }, ((r) => () => r.nextUint32())(new Rng(123))));
    const saved = a.state;
    const cont = Array.from({ length: 5 }, () => a.nextFloat());
    const b = new Rng(999);
    b.state = saved;
    assert.deepEqual(Array.from({ length: 5 }, () => b.nextFloat()), cont);
    assert.notDeepEqual(first, Array.from({ length: 5 }, ((r) => () => r.nextUint32())(new Rng(124))));
  });

  test('draws integers in range, roughly uniformly, and shuffles into permutations', () => {
    const r = new Rng(1);
    const counts = new Array(6).fill(0);
    for (let i = 0; i < 6000; i++) counts[r.nextInt(6)]++;
    assert.ok(counts.every((c) => c > 850 && c < 1150), `counts ${counts}`);
    const arr = r.shuffle([...Array(50).keys()]);
    assert.deepEqual([...arr].sort((x, y) => x - y), [...Array(50).keys()]);
    assert.notDeepEqual(arr, [...Array(50).keys()]);
    let sum = 0, sq = 0;
    for (let i = 0; i < 4000; i++) {
      const g = r.nextGaussian();
      sum += g;
      sq += g * g;
    }
    assert.ok(Math.abs(sum / 4000) < 0.1 && Math.abs(sq / 4000 - 1) < 0.1);
    assert.throws(() => r.nextInt(0));
  });
});
