// Tokenize once: a cold load on several threads gives what readJsonl gives, a second load comes from
// the cache unchanged, the key follows content / max_length, and a bad line in a later chunk still
// names its file:line.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createRandomModel } from '../model/hf/init.ts';
import { loadTokenizer } from '../model/hf/tokenizer.ts';
import { readJsonl, type Dataset } from '../recipe/data.ts';
import { loadDataset } from '../recipe/load-dataset.ts';

const WORDS = 'alpha beta gamma delta epsilon zeta eta theta iota kappa'.split(' ');

function same(a: Dataset, b: Dataset): void {
  assert.deepEqual(a.stats, b.stats);
  assert.equal(a.examples.length, b.examples.length);
  a.examples.forEach((e, i) => {
    assert.deepEqual(Array.from(b.examples[i].inputIds), Array.from(e.inputIds), `example ${i} ids`);
    assert.deepEqual(Array.from(b.examples[i].labels), Array.from(e.labels), `example ${i} labels`);
  });
}

test('token cache: parallel cold load = readJsonl, cached load = cold load, key follows content and max_length', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-tokcache-'));
  process.env.PROPIPE_CACHE_DIR = path.join(root, 'cache');
  const model = path.join(root, 'model');
  await createRandomModel(model, { layers: 1, hidden: 16, heads: 2, kvHeads: 1, intermediate: 32, vocab: 300, seed: 1 });
  const tokenizer = await loadTokenizer(model);
  const file = path.join(root, 'train.jsonl');
  const rec = (i: number) => JSON.stringify(i % 3 === 0 ? { text: `${WORDS[i % 10]} ${WORDS[(i * 7) % 10]} number ${i}` } : { instruction: `say ${WORDS[i % 10]}`, input: i % 2 ? '' : WORDS[(i * 3) % 10], output: `${WORDS[(i * 5) % 10]} ${i}` });
  fs.writeFileSync(file, Array.from({ length: 300 }, (_, i) => rec(i)).join('\n') + '\n');
  const opts = { tokenizer, tokenizerDir: model, vocabSize: 300, maxLength: 512, cache: true };

  const ref = await readJsonl(file, opts);
  const cold = await loadDataset(file, { ...opts, threads: 2 });
  same(ref, cold);
  const entries = fs.readdirSync(path.join(root, 'cache', 'tokens'));
  assert.equal(entries.length, 1);
  const warm = await loadDataset(file, { ...opts, threads: 2 });
  same(ref, warm);
  // Served from the file: the views share one buffer.
  assert.equal(warm.examples[0].inputIds.buffer, warm.examples[warm.examples.length - 1].labels.buffer);

  // Other max_length, other content: other entries, never a stale hit.
  same(await readJsonl(file, { ...opts, maxLength: 300 }), await loadDataset(file, { ...opts, maxLength: 300 }));
  fs.appendFileSync(file, rec(301) + '\n');
  same(await readJsonl(file, opts), await loadDataset(file, opts));
  assert.equal(fs.readdirSync(path.join(root, 'cache', 'tokens')).length, 3);

  // A bad record in the last chunk: the error names the line, as readJsonl does.
  fs.appendFileSync(file, '{"instruction": 5, "output": "x"}\n');
  await assert.rejects(loadDataset(file, { ...opts, threads: 2 }), (err: Error) => err.message.includes(`train.jsonl:302:`) && err.message.includes('"instruction" must be a string'));
  delete process.env.PROPIPE_CACHE_DIR;
  fs.rmSync(root, { recursive: true, force: true });
});
