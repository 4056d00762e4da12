// `propipe download` against a local stand-in for the Hub (test/support/fake-hub.ts): the files a run
// needs and nothing else, byte-identical and checksummed, resumed after a cut, corrupt bytes refused,
// gated access and unknown revisions explained.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { DownloadError, downloadModel } from '../hub/download.ts';
import { globToRegExp, selectFiles } from '../hub/select.ts';
import { createRandomModel, randomWeights, randomModelConfig } from '../model/hf/init.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { paramSpecs } from '../model/llama/param-specs.ts';
import { writeCheckpoint } from '../model/hf/checkpoint.ts';
import { propipeAsync as propipe } from './support/cli.ts';
import { hubFilesOf, startFakeHub, type FakeHub } from './support/fake-hub.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-dl-'));
const src = path.join(tmp, 'src');
const REPO = 'propipe-test/tiny-llama';
const COMMIT = 'a'.repeat(40);
const TOKEN = 'hf_testtoken';
let hub: FakeHub;
let outNo = 0;
const newOut = () => path.join(tmp, `out${outNo++}`);

before(async () => {
  const opts = { layers: 2, hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, vocab: 300, seed: 4 };
  await createRandomModel(src, opts);
  // Sharded, as real checkpoints are: three or more shards and an index.
  writeCheckpoint(src, randomWeights(randomModelConfig(opts).config, 4, 0.02), { maxShardBytes: 40_000 });
  const files = hubFilesOf(src);
  files.push({ path: 'README.md', bytes: Buffer.from('# tiny\n'), lfs: false });
  files.push({ path: 'pytorch_model.bin', bytes: Buffer.alloc(1000, 7), lfs: true });
  files.push({ path: 'original/consolidated.00.pth', bytes: Buffer.alloc(500, 3), lfs: true });
  hub = await startFakeHub({ repo: REPO, commit: COMMIT, files, token: TOKEN });
});
after(() => hub.close());

const download = (out: string, extra: Partial<Parameters<typeof downloadModel>[0]> = {}) => downloadModel({ repo: REPO, out, hubUrl: hub.url, token: TOKEN, ...extra });
const shards = () => fs.readdirSync(src).filter((f) => /^model-\d+-of-\d+\.safetensors$/.test(f)).sort();

test('file selection: run files at the top level by default, fnmatch patterns with --include', () => {
  const paths = ['config.json', 'model-00001-of-00002.safetensors', 'model.safetensors.index.json', 'tokenizer.json', 'README.md', 'pytorch_model.bin', 'original/params.json', 'onnx/model.safetensors'];
  assert.deepEqual(selectFiles(paths), ['config.json', 'model-00001-of-00002.safetensors', 'model.safetensors.index.json', 'tokenizer.json']);
  assert.deepEqual(selectFiles(paths, ['*.json']), ['config.json', 'model.safetensors.index.json', 'tokenizer.json', 'original/params.json']);
  assert.ok(globToRegExp('model-0000[12]-of-*.safetensors').test('model-00002-of-00002.safetensors'));
  assert.ok(!globToRegExp('config?json').test('config.jsonx'));
});

test('downloads what a run needs, byte-identical, verified, into a directory the trainer opens', async () => {
  assert.ok(shards().length >= 3, `expected a sharded source, got ${shards()}`);
  const out = newOut();
  const r = await download(out);
  assert.equal(r.commit, COMMIT);
  const want = ['config.json', 'generation_config.json', 'model.safetensors.index.json', ...shards(), 'tokenizer.json', 'tokenizer_config.json'].sort();
  assert.deepEqual(r.files.map((f) => f.path).sort(), want);
  for (const f of want) assert.deepEqual(fs.readFileSync(path.join(out, f)), fs.readFileSync(path.join(src, f)), f);
  assert.ok(!fs.existsSync(path.join(out, 'pytorch_model.bin')) && !fs.existsSync(path.join(out, 'README.md')) && !fs.existsSync(path.join(out, 'original')));
  assert.ok(!fs.existsSync(path.join(out, '.propipe-download')), 'no partial files are left');
  assert.equal(r.files.find((f) => f.path === shards()[0])!.algo, 'sha256', 'LFS files are checked by their SHA-256 oid');
  assert.equal(r.files.find((f) => f.path === 'config.json')!.algo, 'git-sha1', 'git files by their blob id');
  const m = openPretrained(out);
  for (const s of paramSpecs(m.config)) assert.equal(m.load(s.name).length, s.shape.reduce((a, b) => a * b, 1));
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'download.json'), 'utf8')).commit, COMMIT);

  // Again: every file verifies in place, nothing is transferred.
  const before = hub.requests.filter((q) => q.url.includes('/resolve/') || q.url.startsWith('/cdn/')).length;
  const again = await download(out);
  assert.ok(again.files.every((f) => f.status === 'kept'));
  assert.equal(again.bytesFetched, 0);
  assert.equal(hub.requests.filter((q) => q.url.includes('/resolve/') || q.url.startsWith('/cdn/')).length, before);
});

test('a cut connection is resumed with a Range request from the bytes already on disk', async () => {
  const shard = shards()[1];
  const size = fs.statSync(path.join(src, shard)).size;
  // Within one run: the transfer is cut after 10 000 bytes and the next attempt continues.
  hub.cutOnce.set(shard, 10_000);
  const out = newOut();
  const from = hub.requests.length;
  const r = await download(out);
  assert.equal(r.files.find((f) => f.path === shard)!.status, 'resumed');
  assert.ok(hub.requests.slice(from).some((q) => q.url.startsWith('/cdn/') && q.range === `bytes=10000-${size - 1}`), 'resumed from byte 10000');
  assert.deepEqual(fs.readFileSync(path.join(out, shard)), fs.readFileSync(path.join(src, shard)));

  // Across runs: a partial file left by a killed process is continued, not restarted.
  const out2 = newOut();
  fs.mkdirSync(path.join(out2, '.propipe-download'), { recursive: true });
  fs.writeFileSync(path.join(out2, '.propipe-download', `${shard}.part`), fs.readFileSync(path.join(src, shard)).subarray(0, 12_345));
  const from2 = hub.requests.length;
  const r2 = await download(out2);
  assert.equal(r2.files.find((f) => f.path === shard)!.status, 'resumed');
  assert.ok(hub.requests.slice(from2).some((q) => q.range === `bytes=12345-${size - 1}`));
  assert.deepEqual(fs.readFileSync(path.join(out2, shard)), fs.readFileSync(path.join(src, shard)));
});

test('bytes that do not match the Hub’s checksum are refused and removed; the next run fetches them again', async () => {
  const out = newOut();
  hub.corrupt.add(shards()[0]);
  await assert.rejects(download(out), (err: Error) => err instanceof DownloadError && new RegExp(`${shards()[0]} does not match the Hub's listing .*sha256.*run the command again`).test(err.message));
  assert.ok(!fs.existsSync(path.join(out, shards()[0])));
  assert.ok(!fs.existsSync(path.join(out, '.propipe-download', `${shards()[0]}.part`)));
  hub.corrupt.clear();
  const r = await download(out);
  assert.equal(r.files.find((f) => f.path === shards()[0])!.status, 'fetched');
  assert.ok(r.files.some((f) => f.status === 'kept'), 'files verified by the first run are kept');
});

test('the CLI: HF_ENDPOINT and HF_TOKEN, gated access, unknown revision, --include', async () => {
  const env = { HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN };
  const out = newOut();
  const ok = await propipe(['download', REPO, '--out', out, '--include', '*.json', 'tokenizer*'], env);
  assert.equal(ok.status, 0, ok.stderr);
  assert.deepEqual(fs.readdirSync(out).sort(), ['config.json', 'download.json', 'generation_config.json', 'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json']);
  const gated = await propipe(['download', REPO, '--out', newOut()], { HF_ENDPOINT: hub.url });
  assert.equal(gated.status, 1);
  assert.match(gated.stderr, /refused access \(HTTP 401\)\. For a gated or private model, accept its license on the Hub and set HF_TOKEN/);
  const rev = await propipe(['download', REPO, '--revision', 'v9', '--out', newOut()], env);
  assert.equal(rev.status, 1);
  assert.match(rev.stderr, /propipe-test\/tiny-llama@v9 on http:\/\/127\.0\.0\.1:\d+ was not found \(HTTP 404\)\. Check the repository name and --revision/);
  const none = await propipe(['download', REPO, '--out', newOut(), '--include', '*.gguf'], env);
  assert.equal(none.status, 1);
  assert.match(none.stderr, /no file of propipe-test\/tiny-llama@main matches \*\.gguf/);
});
