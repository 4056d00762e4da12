// The commands a user runs first: help, init-model, then eval and grad on text data.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../model/hf/config.ts';
import { openCheckpoint } from '../model/hf/checkpoint.ts';
import { openSafetensors } from '../model/hf/safetensors-read.ts';
import { loadTokenizer } from '../model/hf/tokenizer.ts';
import { propipe } from './support/cli.ts';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-cli-'));

test('--help lists the commands and each command has its own help', () => {
  const r = propipe(['--help']);
  assert.equal(r.status, 0);
  for (const c of ['init-model', 'eval', 'grad']) assert.match(r.stdout, new RegExp(`\\n  ${c} `));
  const h = propipe(['grad', '--help']);
  assert.match(h.stdout, /--trainable <value>/);
  const bad = propipe(['frobnicate']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown command 'frobnicate'/);
});

test('init-model writes a loadable HF model; eval and grad run on text data', async () => {
  const dir = path.join(tmp(), 'tiny');
  const r = propipe(['init-model', '--out', dir, '--layers', '2', '--hidden', '32', '--heads', '4', '--kv-heads', '2', '--intermediate', '64', '--vocab', '300', '--seed', '3']);
  assert.equal(r.status, 0, r.stderr);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) assert.ok(fs.existsSync(path.join(dir, f)), f);
  const { config } = loadConfig(dir);
  assert.equal(config.numKvHeads, 2);
  assert.equal(openCheckpoint(dir).shape('model.layers.1.mlp.down_proj.weight').join(), '32,64');
  const tok = await loadTokenizer(dir);
  assert.equal(tok.vocabSize, 300);

  const data = path.join(tmp(), 'd.jsonl');
  fs.writeFileSync(data, '{"text": "the quick brown fox"}\n{"instruction": "say hi", "output": "hi"}\n');
  const ev = propipe(['eval', '--model', dir, '--data', data, '--json']);
  assert.equal(ev.status, 0, ev.stderr);
  const { loss, tokens } = JSON.parse(ev.stdout);
  // A random init with std 0.02 predicts nearly uniformly: loss ≈ ln(vocab).
  assert.ok(Math.abs(loss - Math.log(300)) < 0.1, `loss ${loss}`);
  assert.ok(tokens > 4);

  const out = path.join(tmp(), 'g.safetensors');
  const gr = propipe(['grad', '--model', dir, '--data', data, '--out', out, '--trainable', '1']);
  assert.equal(gr.status, 0, gr.stderr);
  assert.ok(openSafetensors(out).names().every((n) => n.startsWith('model.layers.1.')));

  const again = path.join(tmp(), 'tiny2');
  propipe(['init-model', '--out', again, '--layers', '2', '--hidden', '32', '--heads', '4', '--kv-heads', '2', '--intermediate', '64', '--vocab', '300', '--seed', '3']);
  assert.deepEqual(fs.readFileSync(path.join(again, 'model.safetensors')), fs.readFileSync(path.join(dir, 'model.safetensors')), 'same seed, same weights');
});

test('a bad dataset line is reported with its line number; a missing flag names the flag', () => {
  const model = path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa');
  const data = path.join(tmp(), 'bad.jsonl');
  fs.writeFileSync(data, '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, 2, 999]}\n');
  const r = propipe(['eval', '--model', model, '--data', data]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /bad\.jsonl:2: .*999/);
  const m = propipe(['eval', '--data', data]);
  assert.equal(m.status, 2);
  assert.match(m.stderr, /--model is required/);
});

test('a model directory without weights gets an error naming the directory', () => {
  const dir = tmp();
  fs.copyFileSync(path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa/config.json'), path.join(dir, 'config.json'));
  const r = propipe(['eval', '--model', dir, '--data', path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa/data.jsonl')]);
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes(dir), r.stderr);
});

test('train refuses bad input before writing anything: a bad dataset line, a bad config value', async () => {
  const dir = tmp();
  const data = path.join(dir, 'bad.jsonl');
  fs.writeFileSync(data, '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, 2, "x"]}\n');
  const out = path.join(dir, 'out');
  const model = path.resolve(import.meta.dirname, 'fixtures/golden/llama-gqa');
  const r = propipe(['train', '--model', model, '--dataset', data, '--output-dir', out, '--train-type', 'full']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /bad\.jsonl:2: .*input_ids/);
  assert.ok(!fs.existsSync(out), 'no output directory left behind');
  const cfg = path.join(dir, 'run.yaml');
  fs.writeFileSync(cfg, `model: ${model}\ndataset: ${data}\noutput_dir: ${out}\nlearning_rate: fast\n`);
  const c = propipe(['train', '--config', cfg]);
  assert.equal(c.status, 2);
  assert.match(c.stderr, /run\.yaml is not a valid run config:\n {2}learning_rate: /);
  assert.ok(!fs.existsSync(out));
});
