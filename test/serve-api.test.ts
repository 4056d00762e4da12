// `propipe serve` through the official openai npm client: model list with the adapter's parent,
// chat (whole and streamed), completions with stop, an adapter by name, errors with their status
// and named parameter, a full queue, and a client that disconnects.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { startServer, type RunningServer } from '../serve/serve.ts';
import { makeProLoraAdapter, makeServeModel, tempRoot } from './support/serve-models.ts';

const KEY = 'test-key-123';
const root = tempRoot();
let server: RunningServer;
let client: OpenAI;

before(async () => {
  const base = path.join(root, 'base');
  await makeServeModel(base, 'llama', 4);
  const { adapter } = makeProLoraAdapter(base, path.join(root, 'run'));
  // The model's own sampling defaults: greedy unless a request says otherwise.
  fs.writeFileSync(path.join(base, 'generation_config.json'), JSON.stringify({ eos_token_id: 1, temperature: 0 }));
  server = await startServer({ model: base, adapters: [{ name: 'pro', dir: adapter }], port: 0, apiKey: KEY, maxModelLen: 2048, maxBatch: 2, maxQueue: 2 });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: KEY, maxRetries: 0 });
});

after(async () => {
  await server?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

const chat = { messages: [{ role: 'user' as const, content: 'alpha beta gamma' }], temperature: 0, max_tokens: 12 };

function post(route: string, body: unknown, key = KEY, signal?: AbortSignal): Promise<Response> {
  return fetch(`${server.url}${route}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
}

async function waitFor(ready: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!ready() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
}

describe('OpenAI-compatible API', () => {
  it('lists the base and the adapter, whose parent is the base', async () => {
    const models = (await client.models.list()).data as (OpenAI.Model & { parent: string | null })[];
    assert.deepEqual(models.map((m) => [m.id, m.parent]), [['base', null], ['pro', 'base']]);
  });

  it('chat: a streamed answer is the non-streamed answer, with usage at the end', async () => {
    const whole = await client.chat.completions.create({ model: 'base', ...chat });
    const content = whole.choices[0].message.content ?? '';
    assert.equal(whole.object, 'chat.completion');
    assert.ok(whole.usage!.prompt_tokens > 3 && whole.usage!.completion_tokens <= 12);
    assert.ok(content.length > 0);
    const stream = await client.chat.completions.create({ model: 'base', ...chat, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    let finish: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, content);
    assert.equal(finish, whole.choices[0].finish_reason);
    assert.deepEqual(usage, whole.usage);
  });

  it('completions: a stop string cuts the text before it; n and prompt lists give one choice each', async () => {
    const params = { model: 'base', prompt: 'alpha beta', max_tokens: 40, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming;
    const full = (await client.completions.create(params)).choices[0].text;
    const clean = [...full.matchAll(/[^\uFFFD]{4}/g)].map((m) => [m.index!, m[0]] as const).find(([i]) => i >= 6);
    assert.ok(clean, `no clean 4-character piece in ${JSON.stringify(full)}`);
    const stop = clean[1].slice(1, 3);
    const cut = await client.completions.create({ ...params, stop: [stop] });
    assert.equal(cut.choices[0].text, full.slice(0, full.indexOf(stop)));
    assert.equal(cut.choices[0].finish_reason, 'stop');
    const many = await client.completions.create({ model: 'base', prompt: ['alpha', 'beta'], max_tokens: 4, n: 2, temperature: 1, seed: 5 });
    assert.deepEqual(many.choices.map((c) => c.index), [0, 1, 2, 3]);
    assert.equal(many.usage!.completion_tokens, many.choices.length * 4);
  });

  it("a request without temperature takes generation_config.json's", async () => {
    const { temperature: _, ...unset } = chat;
    const a = await client.chat.completions.create({ model: 'base', ...unset });
    const b = await client.chat.completions.create({ model: 'base', ...unset });
    const greedy = await client.chat.completions.create({ model: 'base', ...chat });
    assert.equal(a.choices[0].message.content, greedy.choices[0].message.content);
    assert.equal(b.choices[0].message.content, greedy.choices[0].message.content);
    const hot = await Promise.all([1, 2, 3].map(() => client.chat.completions.create({ model: 'base', ...unset, temperature: 1.5 })));
    assert.ok(hot.some((h) => h.choices[0].message.content !== greedy.choices[0].message.content), 'an explicit temperature wins');
  });

  it('an adapter is chosen by its name', async () => {
    const viaBase = await client.chat.completions.create({ model: 'base', ...chat, max_tokens: 24 });
    const viaPro = await client.chat.completions.create({ model: 'pro', ...chat, max_tokens: 24 });
    assert.equal(viaPro.model, 'pro');
    assert.notEqual(viaPro.choices[0].message.content, viaBase.choices[0].message.content);
  });

  it('a wrong or missing key raises AuthenticationError; /health and /metrics need none', async () => {
    const wrong = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'nope', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), OpenAI.AuthenticationError);
    const missing = await fetch(`${server.url}/v1/models`);
    assert.equal(missing.status, 401);
    assert.equal(((await missing.json()) as { error: { code: string } }).error.code, 'invalid_api_key');
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    for (const name of ['propipe_serve_requests_total', 'propipe_serve_prompt_tokens_total', 'propipe_serve_generation_tokens_total', 'propipe_serve_time_to_first_token_seconds', 'propipe_serve_decode_tokens_per_second', 'propipe_serve_queue_length']) {
      assert.match(metrics, new RegExp(`^${name}`, 'm'));
    }
  });

  it('bad requests: 404 for an unknown model, 400 naming the parameter, 400 over the context', async () => {
    const err = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (e) {
        return e as InstanceType<typeof OpenAI.APIError>;
      }
      assert.fail('the request succeeded');
    };
    const notFound = await err(client.chat.completions.create({ model: 'nope', ...chat }));
    assert.ok(notFound instanceof OpenAI.NotFoundError);
    assert.equal(notFound.param, 'model');
    const badTemp = await err(client.chat.completions.create({ model: 'base', ...chat, temperature: 7 }));
    assert.ok(badTemp instanceof OpenAI.BadRequestError);
    assert.equal(badTemp.param, 'temperature');
    const tooLong = await err(client.completions.create({ model: 'base', prompt: 'alpha', max_tokens: 2100 }));
    assert.ok(tooLong instanceof OpenAI.BadRequestError);
    assert.equal(tooLong.param, 'max_tokens');
    assert.match(tooLong.message, /maximum context length is 2048 tokens/);
    const badIds = await err(client.completions.create({ model: 'base', prompt: [1, 2, 99999], max_tokens: 2 }));
    assert.equal(badIds.param, 'prompt');
  });

  it('a full queue answers 429; a client that disconnects frees its batch slot', async () => {
    const long = { model: 'base', prompt: 'alpha', max_tokens: 2000, ignore_eos: true, stream: true };
    const aborts = Array.from({ length: 4 }, () => new AbortController());
    // Two fill the batch (--max-batch 2), two wait (--max-queue 2), the next is refused.
    const engine = server.loaded.engine;
    const running = await Promise.all(aborts.slice(0, 2).map((a) => post('/v1/completions', long, KEY, a.signal)));
    await waitFor(() => engine.runningRows === 2);
    running.push(...(await Promise.all(aborts.slice(2).map((a) => post('/v1/completions', long, KEY, a.signal)))));
    assert.deepEqual(running.map((r) => r.status), [200, 200, 200, 200]);
    assert.equal(engine.queueLength, 2);
    const refused = await post('/v1/completions', long);
    assert.equal(refused.status, 429);
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'queue_full');

    const reader = running[0].body!.getReader();
    await reader.read();
    const before = (await server.loaded.metrics.generationTokens.get()).values.reduce((a, v) => a + v.value, 0);
    for (const a of aborts) a.abort();
    await waitFor(() => engine.runningRows === 0 && engine.queueLength === 0);
    assert.equal(engine.runningRows + engine.queueLength, 0, 'cancelled requests left the batch and the queue');
    const afterCancel = (await server.loaded.metrics.generationTokens.get()).values.reduce((a, v) => a + v.value, 0);
    assert.ok(afterCancel - before < 1000, `generation stopped early (${afterCancel - before} tokens after the disconnect)`);
  });
});
