// `propipe serve` and `propipe chat` as a user runs them: a real server process with a key file,
// stopped by SIGTERM; a chat fed through stdin; flag mistakes refused with what to do.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadServing } from '../serve/serve.ts';
import { propipe } from './support/cli.ts';
import { makeServeModel, tempRoot } from './support/serve-models.ts';

const BIN = path.resolve(import.meta.dirname, '../bin/propipe.mjs');
const root = tempRoot();
const model = path.join(root, 'tiny');

before(() => makeServeModel(model, 'qwen2'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

describe('propipe serve / chat', () => {
  it('serves on a free port with a key file; on SIGTERM it finishes the running request, then exits', async () => {
    const keyFile = path.join(root, 'key');
    fs.writeFileSync(keyFile, 'sekrit\n');
    const child = spawn(process.execPath, [BIN, 'serve', '--model', model, '--port', '0', '--api-key-file', keyFile, '--served-model-name', 'tiny-qwen', '--max-model-len', '256'], {
      env: { ...process.env, PROPIPE_LOG_LEVEL: 'warn', PROPIPE_LOG_JSON: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    let signalled = false;
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /at (http:\/\/\S+\/v1)/.exec(out);
          if (m) resolve(m[1]);
        });
        child.once('exit', (code) => reject(new Error(`serve exited with ${code} before listening`)));
      });
      const models = await fetch(`${url}/models`, { headers: { authorization: 'Bearer sekrit' } });
      assert.equal(models.status, 200);
      assert.deepEqual(((await models.json()) as { data: { id: string }[] }).data.map((m) => m.id), ['tiny-qwen']);
      const done = await fetch(`${url}/completions`, {
        method: 'POST',
        headers: { authorization: 'Bearer sekrit', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'tiny-qwen', prompt: 'alpha', max_tokens: 5, temperature: 0, ignore_eos: true }),
      });
      assert.equal(((await done.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 5);

      const running = await fetch(`${url}/completions`, {
        method: 'POST',
        headers: { authorization: 'Bearer sekrit', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'tiny-qwen', prompt: 'alpha', max_tokens: 200, temperature: 0, ignore_eos: true, stream: true }),
      });
      const reader = running.body!.getReader();
      let text = new TextDecoder().decode((await reader.read()).value);
      child.kill('SIGTERM');
      signalled = true;
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value);
      assert.match(text, /"finish_reason":"length"/);
      assert.match(text, /data: \[DONE\]\n\n$/);
    } finally {
      if (!signalled) child.kill('SIGTERM');
      assert.equal(await exited, 0);
    }
  });

  it('chat answers each line of stdin in turn', () => {
    const r = spawnSync(process.execPath, [BIN, 'chat', '--model', model, '--temperature', '0', '--max-tokens', '6'], {
      input: 'hello\nand again\n',
      encoding: 'utf8',
      env: { ...process.env, PROPIPE_LOG_LEVEL: 'warn' },
      timeout: 120_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const answers = r.stdout.split('\n').filter((l) => l.length > 0);
    assert.equal(answers.length, 2, r.stdout);
  });

  it('refuses flag mistakes with what to do', async () => {
    const both = propipe(['serve', '--model', model, '--api-key', 'a', '--api-key-file', 'b']);
    assert.equal(both.status, 2);
    assert.match(both.stderr, /--api-key or --api-key-file, not both/);
    const adapter = propipe(['serve', '--model', model, '--adapter', 'no-equals-sign']);
    assert.equal(adapter.status, 1);
    assert.match(adapter.stderr, /--adapter takes NAME=DIR/);
    await assert.rejects(loadServing({ model, adapters: [{ name: 'x', dir: model }] }), /is not a propipe adapter .*written to output_dir\/adapter by 'propipe train'/);
    await assert.rejects(loadServing({ model, maxModelLen: 1 << 20 }), /--max-model-len 1048576 must be between 2 and the model's max_position_embeddings \(2048\)/);
  });
});
