import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bytesToUnicode, CHATML_TEMPLATE, trainByteLevelBpe } from '../model/hf/bpe-train.ts';
import type { BpeTrainResult } from '../model/hf/bpe-train.ts';
import { builtinCorpus } from '../model/hf/bpe-corpus.ts';
import { loadTokenizer, TokenizerMissingError, tokenizerFromJson, writeTokenizer } from '../model/hf/tokenizer.ts';
import type { TextTokenizer } from '../model/hf/tokenizer.ts';

const SAMPLES = [
  'Hello world, the river town woke slowly.',
  'Spacing  matters:\ttabs,\nnewlines\r\n and a trailing space . ',
  "Don't split it's contractions; they'll merge.",
  'Café naïve façade — Straße, 今日はいい天気ですね, Это простое предложение 🙂👍🏽',
  '<|im_start|>user\nhi<|im_end|>\n',
  '12345 + 0.5 = 12345.5',
];

describe('trainByteLevelBpe', () => {
  test('is deterministic and fills the requested vocab exactly', () => {
    const a = trainByteLevelBpe(null, 777);
    const b = trainByteLevelBpe(null, 777);
    assert.equal(JSON.stringify(a.tokenizerJson), JSON.stringify(b.tokenizerJson));
    assert.equal(a.vocabSize, 777);
    const ids = Object.values(a.tokenizerJson.model.vocab).sort((x, y) => x - y);
    assert.deepEqual(ids, Array.from({ length: 777 }, (_, i) => i), 'vocab ids are exactly 0..vocabSize-1');
    assert.ok(a.tokenizerJson.model.merges.length >= 777 - 5 - 256);
  });

  test('puts specials first, then the 256 byte tokens', () => {
    const { tokenizerJson, tokenizerConfig } = trainByteLevelBpe(['a b c'], 300, ['<extra>']);
    const vocab = tokenizerJson.model.vocab;
    assert.deepEqual(
      ['<s>', '</s>', '<pad>', '<|im_start|>', '<|im_end|>', '<extra>'].map((t) => vocab[t]),
      [0, 1, 2, 3, 4, 5],
    );
    const chars = bytesToUnicode();
    assert.equal(new Set(chars).size, 256);
    assert.equal(vocab[chars[0x20]], 6 + 0x20);
    assert.equal(chars[0x20], 'Ġ');
    assert.equal(vocab['a'], 6 + 0x61);
    assert.deepEqual(tokenizerJson.added_tokens.map((t) => [t.id, t.content, t.special]), [
      [0, '<s>', true], [1, '</s>', true], [2, '<pad>', true], [3, '<|im_start|>', true], [4, '<|im_end|>', true], [5, '<extra>', true],
    ]);
    assert.equal(tokenizerConfig.bos_token, '<s>');
    assert.equal(tokenizerConfig.eos_token, '</s>');
    assert.equal(tokenizerConfig.pad_token, '<pad>');
    assert.equal(tokenizerConfig.tokenizer_class, 'PreTrainedTokenizerFast');
    assert.equal(tokenizerConfig.model_max_length, 2048);
  });

  test('a different corpus gives different merges', () => {
    const a = trainByteLevelBpe(['the cat sat on the mat '.repeat(50)], 300);
    const b = trainByteLevelBpe(['zebra quartz jumps '.repeat(50)], 300);
    assert.notDeepEqual(a.tokenizerJson.model.merges, b.tokenizerJson.model.merges);
    // "at" occurs in cat/sat/mat: the most frequent pair is merged first.
    assert.equal(a.tokenizerJson.model.merges[0], 'a t');
    // All pairs tie at 50 here; ties go to the smaller ids, i.e. Ġ (0x20) then j (0x6a).
    assert.equal(b.tokenizerJson.model.merges[0], 'Ġ j');
  });

  test('rejects a vocab smaller than specials + 256 and names the minimum', () => {
    assert.throws(() => trainByteLevelBpe(null, 260), /at least 261/);
    assert.throws(() => trainByteLevelBpe(null, 261, ['<x>']), /at least 262/);
    assert.doesNotThrow(() => trainByteLevelBpe(['ab'], 261));
  });

  test('stops early when the corpus has no pairs left', () => {
    const r = trainByteLevelBpe(['aaaa'], 1000);
    // "aaaa" → aa, aaaa: two merges, nothing more to learn.
    assert.equal(r.vocabSize, 263);
    assert.deepEqual(r.tokenizerJson.model.merges, ['a a', 'aa aa']);
  });

  test('trains a ~50 KB corpus at vocab 4096 quickly', () => {
    const corpus = builtinCorpus(900);
    const bytes = corpus.reduce((n, d) => n + d.length, 0);
    assert.ok(bytes > 50_000, `corpus is ${bytes} bytes`);
    const t0 = performance.now();
    const r = trainByteLevelBpe(corpus, 4096);
    const ms = performance.now() - t0;
    assert.ok(r.vocabSize > 3000 && r.vocabSize <= 4096, `vocab ${r.vocabSize}`);
    assert.ok(ms < 1500, `took ${ms.toFixed(0)} ms`);
  });

  test('the built-in corpus fills a 4096 vocab', () => {
    assert.equal(trainByteLevelBpe(undefined, 4096).vocabSize, 4096);
  });
});

describe('loadTokenizer', () => {
  let dir: string;
  let trained: BpeTrainResult;
  let tok: TextTokenizer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'propipe-tok-'));
    trained = trainByteLevelBpe(null, 1024);
    await writeTokenizer(join(dir, 'model'), trained.tokenizerJson, trained.tokenizerConfig);
    tok = await loadTokenizer(join(dir, 'model'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('reads the special ids and vocab size from the written files', () => {
    assert.equal(tok.vocabSize, 1024);
    assert.equal(tok.bosId, 0);
    assert.equal(tok.eosId, 1);
    assert.equal(tok.padId, 2);
    assert.equal(tok.addBos, true);
    assert.equal(tok.addEos, false);
    assert.equal(tok.tokenToId('<|im_end|>'), 4);
    assert.equal(tok.idToToken(3), '<|im_start|>');
  });

  test('round-trips ASCII and UTF-8 text', () => {
    for (const s of SAMPLES) {
      const ids = tok.encode(s);
      assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize));
      assert.equal(tok.decode(ids), s);
    }
    assert.deepEqual(tok.encode(''), []);
    assert.equal(tok.decode([]), '');
  });

  test('uses learned merges and adds bos only when asked', () => {
    const plain = tok.encode('the river');
    assert.ok(plain.length < 'the river'.length, `merges should shorten "the river": ${plain}`);
    assert.deepEqual(tok.encode('the river', { addSpecial: true }), [0, ...plain]);
    assert.equal(tok.decode([0, ...plain, 1], { skipSpecial: true }), 'the river');
    assert.equal(tok.decode([0, ...plain, 1]), '<s>the river</s>');
  });

  test('encodes special-token text as the special ids', () => {
    const ids = tok.encode('<|im_start|>user\nhi<|im_end|>');
    assert.equal(ids[0], 3);
    assert.equal(ids[ids.length - 1], 4);
  });

  test('renders the chat template with bos and the generation prompt', () => {
    assert.equal(tok.chatTemplate, CHATML_TEMPLATE);
    const msgs = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi?' },
      { role: 'assistant', content: 'Hello.' },
    ];
    assert.equal(
      tok.applyChatTemplate(msgs),
      '<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n',
    );
    assert.equal(
      tok.applyChatTemplate(msgs.slice(0, 2), { addGenerationPrompt: true }),
      '<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  test('passes extra variables and reports template errors', () => {
    const t = tokenizerFromJson(trained.tokenizerJson, {
      ...trained.tokenizerConfig,
      chat_template: "{% if shout %}{{ messages[0]['content'] | upper }}{% else %}{{ raise_exception('no shout') }}{% endif %}{{ eos_token }}",
    });
    assert.equal(t.applyChatTemplate([{ role: 'user', content: 'hey' }], { variables: { shout: true } }), 'HEY</s>');
    assert.throws(() => t.applyChatTemplate([{ role: 'user', content: 'hey' }]), /chat template failed: no shout/);
    // A template the engine cannot parse only fails when a chat is rendered, not at load.
    const broken = tokenizerFromJson(trained.tokenizerJson, { ...trained.tokenizerConfig, chat_template: '{% for %}' });
    assert.equal(broken.decode(broken.encode('still fine')), 'still fine');
    assert.throws(() => broken.applyChatTemplate([{ role: 'user', content: 'x' }]), /cannot parse the chat template/);
  });

  test('honours add_bos_token=false and picks up chat_template.jinja', async () => {
    const other = join(dir, 'other');
    const { chat_template: _drop, ...config } = trained.tokenizerConfig;
    await writeTokenizer(other, trained.tokenizerJson, { ...config, add_bos_token: false });
    await writeFile(join(other, 'chat_template.jinja'), '{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}');
    const t = await loadTokenizer(other);
    assert.equal(t.addBos, false);
    assert.deepEqual(t.encode('the river', { addSpecial: true }), t.encode('the river'));
    assert.equal(t.applyChatTemplate([{ role: 'user', content: 'x' }]), '[user]x');
  });

  test('without tokenizer_config.json, infers bos from the post-processor and guesses eos', async () => {
    const bare = join(dir, 'bare');
    await writeTokenizer(bare, trained.tokenizerJson, {});
    await rm(join(bare, 'tokenizer_config.json'));
    const t = await loadTokenizer(bare);
    assert.equal(t.bosId, 0);
    assert.equal(t.eosId, 1);
    assert.equal(t.padId, null);
    assert.equal(t.chatTemplate, null);
    assert.throws(() => t.applyChatTemplate([{ role: 'user', content: 'x' }]), /no chat_template/);
  });

  test('a directory without tokenizer files says pre-tokenized data works', async () => {
    await assert.rejects(loadTokenizer(join(dir, 'nothing-here')), (err: unknown) => {
      assert.ok(err instanceof TokenizerMissingError);
      assert.match(err.message, /no tokenizer\.json/);
      assert.match(err.message, /input_ids/);
      return true;
    });
  });

  // Python `tokenizers` is not installed in every environment; when it is, it must agree with us.
  const py = spawnSync('python3', ['-c', 'import tokenizers'], { encoding: 'utf8' });
  test('Python tokenizers loads the file and produces the same ids', { skip: py.status !== 0 && 'python tokenizers not installed' }, () => {
    const script =
      'import json,sys\nfrom tokenizers import Tokenizer\nt=Tokenizer.from_file(sys.argv[1])\n' +
      'print(json.dumps([t.encode(s, add_special_tokens=True).ids for s in json.loads(sys.argv[2])]))';
    const out = spawnSync('python3', ['-c', script, join(dir, 'model', 'tokenizer.json'), JSON.stringify(SAMPLES)], { encoding: 'utf8' });
    assert.equal(out.status, 0, out.stderr);
    assert.deepEqual(JSON.parse(out.stdout), SAMPLES.map((s) => tok.encode(s, { addSpecial: true })));
  });
});
