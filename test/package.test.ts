// What an image build or a user installing the package does: `npm pack`, then `npm install --omit=dev`
// of the tarball in an empty directory. The installed `propipe` must run on plain Node (no tsx, no
// TypeScript sources) — including `launch`, which starts nats-server, a coordinator and workers from
// the installed entry script. Uses the npm cache first (--prefer-offline); the registry fills it once.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { openCheckpoint } from '../model/hf/checkpoint.ts';

const ROOT = path.resolve(import.meta.dirname, '..');

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip', PROPIPE_LOG_JSON: '1', ...env }, timeout: 240_000 });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed:\n${r.stderr}\n${r.stdout}`.slice(-4000));
  return r.stdout;
}

test('npm pack + npm install --omit=dev gives a propipe that runs without dev dependencies', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-pkg-'));
  try {
    const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', tmp], ROOT)) as { filename: string; files: { path: string }[] }[];
    const files = packed[0].files.map((f) => f.path);
    assert.ok(files.includes('dist/cli/main.js') && files.includes('dist/proto/propipe.proto'), 'compiled sources and the .proto ship');
    assert.deepEqual(files.filter((f) => f.endsWith('.ts') || f.startsWith('test/')), [], 'no TypeScript sources or tests in the package');
    assert.ok(!fs.existsSync(path.join(ROOT, 'dist')), 'postpack removes dist/, so a clone keeps running its sources');

    const app = path.join(tmp, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), '{"name":"app","private":true}\n');
    run('npm', ['install', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', path.join(tmp, packed[0].filename)], app);
    assert.ok(!fs.existsSync(path.join(app, 'node_modules/tsx')), 'tsx is not installed');
    const bin = path.join(app, 'node_modules/.bin/propipe');
    assert.match(run(bin, ['--help'], app), /Commands:/);

    // A real pipelined job from the installed package: nats-server, coordinator, 2 workers.
    const model = path.join(tmp, 'model');
    run(bin, ['init-model', '--out', model, '--layers', '2', '--hidden', '32', '--heads', '4', '--kv-heads', '2', '--intermediate', '64', '--vocab', '300'], app);
    const data = path.join(tmp, 'train.jsonl');
    fs.writeFileSync(data, Array.from({ length: 8 }, (_, i) => JSON.stringify({ text: `sample ${i} of the packaged run` })).join('\n') + '\n');
    const out = path.join(tmp, 'out');
    fs.writeFileSync(path.join(tmp, 'run.yaml'), YAML.stringify({ model, dataset: data, output_dir: out, train_type: 'llamapro', llamapro_new_blocks: 2, stage_order: 'none', steps_per_stage: 3, per_device_train_batch_size: 4 }));
    const started = Date.now();
    run(bin, ['launch', '--workers', '2', '--config', path.join(tmp, 'run.yaml')], app, { PROPIPE_LOG_LEVEL: 'warn' });
    t.diagnostic(`packaged launch took ${Date.now() - started} ms`);
    assert.ok(openCheckpoint(path.join(out, 'final')).names().length > 0, 'the job wrote final/');
    assert.ok(fs.statSync(path.join(out, 'report.html')).size > 100_000, 'the packaged launch wrote report.html (Chart.js and the page script ship)');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
