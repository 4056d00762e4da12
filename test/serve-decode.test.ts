// The KV-cache decoder against the evaluation path: at temperature 0, 64 tokens equal greedy decoding
// by full recomputation and the log-probabilities agree within 1e-4, for each architecture, with rows
// of different lengths joining and leaving the batch mid-run, and for a LLaMA Pro + LoRA adapter
// served on the shared base. Also: seeded sampling is reproducible, stop strings that span tokens.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { expandCheckpoint } from '../model/expand/checkpoint.ts';
import { loadTokenizer } from '../model/hf/tokenizer.ts';
import { PREFILL_CHUNK } from '../serve/engine.ts';
import type { SamplingParams } from '../serve/sampling.ts';
import type { GenerationRequest } from '../serve/sequence.ts';
import { loadServing, type Loaded } from '../serve/serve.ts';
import { TextStream } from '../serve/text-stream.ts';
import { makeAdapter, makeProLoraAdapter, makeServeModel, MISTRAL_WINDOW, referenceGreedy, tempRoot, type ServeArch } from './support/serve-models.ts';

const root = tempRoot();
after(() => fs.rmSync(root, { recursive: true, force: true }));

const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1, seed: null };
const STEPS = 64;

function request(model: string, prompt: number[], o: Partial<GenerationRequest> = {}): GenerationRequest {
  return { model, prompt, maxTokens: STEPS, n: 1, sampling: GREEDY, stop: [], logprobs: 0, ignoreEos: true, ...o };
}

async function assertMatchesReference(modelDir: string, prompt: number[], tokens: number[], logprobs: number[], label: string): Promise<void> {
  const ref = await referenceGreedy(modelDir, prompt, tokens.length);
  assert.deepEqual(tokens, ref.tokens, `${label}: cached greedy tokens differ from full recomputation`);
  const worst = Math.max(...logprobs.map((lp, i) => Math.abs(lp - ref.logprobs[i])));
  assert.ok(worst < 1e-4, `${label}: logprob differs from the evaluation path's log-softmax by ${worst}`);
}

describe('KV-cache decoding equals full recomputation', () => {
  for (const arch of ['llama', 'qwen2', 'mistral'] as ServeArch[]) {
    it(`${arch}: three rows of different lengths, one joining mid-run and one leaving early`, async () => {
      const dir = path.join(root, arch);
      await makeServeModel(dir, arch);
      const served = await loadServing({ model: dir, maxModelLen: 128, maxBatch: 4 });
      try {
        const prompts = [[5, 17, 99], [40, 41, 42, 43, 44, 45, 46], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]];
        let late: ReturnType<Loaded['engine']['generate']> | null = null;
        let seen = 0;
        const first = served.engine.generate(
          request(arch, prompts[0], {
            onDelta: (_c, _t, tokens) => {
              seen += tokens.length;
              // The third row joins a batch that has already decoded a dozen steps.
              if (seen >= 12 && !late) late = served.engine.generate(request(arch, prompts[2]));
            },
          }),
        );
        const second = served.engine.generate(request(arch, prompts[1], { maxTokens: 30 }));
        const results = [await first, await second];
        assert.ok(late, 'the late request was submitted');
        results.push(await late!);
        assert.equal(results[1].choices[0].tokenIds.length, 30);
        for (const [i, r] of results.entries()) {
          const c = r.choices[0];
          await assertMatchesReference(dir, prompts[i], c.tokenIds, c.logprobs!.map((t) => t.logprob), `${arch} row ${i}`);
        }
        if (arch === 'mistral') assert.ok(prompts[2].length + STEPS > MISTRAL_WINDOW * 4, 'the sliding window is exercised');
      } finally {
        await served.close();
      }
    });
  }

  it('three adapters on one base equal their merged models; the LoRA-only one shares the base batch', async () => {
    const base = path.join(root, 'pro-base');
    await makeServeModel(base, 'llama', 4);
    const pro = makeProLoraAdapter(base, path.join(root, 'pro-run'));
    // LoRA of other ranks: one with a retrained head (its own batch), one LoRA only (the base's batch).
    const tuned = makeAdapter(base, path.join(root, 'tuned-run'), { newBlocks: 0, loraRank: 2, loraOn: /(v_proj|up_proj)\.weight$/, head: true, seed: 23 });
    const lora = makeAdapter(base, path.join(root, 'lora-run'), { newBlocks: 0, loraRank: 3, loraOn: /(q_proj|k_proj|o_proj|gate_proj)\.weight$/, seed: 29 });
    const adapters = [{ name: 'pro', dir: pro.adapter }, { name: 'tuned', dir: tuned.adapter }, { name: 'lora', dir: lora.adapter }];
    const served = await loadServing({ model: base, adapters, maxModelLen: 128, maxBatch: 8 });
    try {
      const prompt = [3, 30, 60, 90, 120];
      const models = [['pro', pro.merged], ['tuned', tuned.merged], ['lora', lora.merged], ['pro-base', base]];
      const batches = new Set<string>();
      const results = await Promise.all(
        models.map(([name]) => served.engine.generate(request(name, prompt, { onToken: () => served.engine.batches().forEach((b) => batches.add([...new Set(b)].sort().join('+'))) }))),
      );
      for (const [i, [name, dir]] of models.entries()) {
        const c = results[i].choices[0];
        await assertMatchesReference(dir, prompt, c.tokenIds, c.logprobs!.map((t) => t.logprob), name);
      }
      const outputs = new Set(results.map((r) => r.choices[0].tokenIds.join()));
      assert.equal(outputs.size, 4, 'each adapter changes the output');
      assert.ok(batches.has('lora+pro-base'), `the base and the LoRA adapter decode in one batch (batches seen: ${[...batches].join(', ')})`);
      assert.ok(![...batches].some((b) => b.includes('+') && (b.includes('pro+') || b.includes('tuned'))), 'adapters with blocks or a head of their own keep their own batch');
    } finally {
      await served.close();
    }
    // The same LLaMA Pro adapter on the checkpoint `propipe expand` made (its new blocks zero copies).
    const expanded = path.join(root, 'pro-expanded');
    expandCheckpoint(base, expanded, 2, 2);
    const onExpanded = await loadServing({ model: expanded, adapters: [{ name: 'pro', dir: pro.adapter }], maxModelLen: 128 });
    try {
      const prompt = [3, 30, 60, 90, 120];
      const c = (await onExpanded.engine.generate(request('pro', prompt))).choices[0];
      await assertMatchesReference(pro.merged, prompt, c.tokenIds, c.logprobs!.map((t) => t.logprob), 'pro on the expanded base');
    } finally {
      await onExpanded.close();
    }
  });
});

describe('long prompts', () => {
  it(`a prompt of several prefill chunks (${PREFILL_CHUNK} tokens each) decodes as full recomputation does`, async () => {
    const dir = path.join(root, 'long');
    await makeServeModel(dir, 'mistral');
    const served = await loadServing({ model: dir, maxModelLen: 2048 });
    try {
      const prompt = Array.from({ length: 2 * PREFILL_CHUNK + 77 }, (_, i) => 3 + ((i * 37) % 290));
      const c = (await served.engine.generate(request('long', prompt, { maxTokens: 8 }))).choices[0];
      await assertMatchesReference(dir, prompt, c.tokenIds, c.logprobs!.map((t) => t.logprob), 'chunked prefill');
    } finally {
      await served.close();
    }
  });
});

describe('sampling and stop strings', () => {
  it('a seed reproduces the sampled text, alone or batched with other requests', async () => {
    const dir = path.join(root, 'seeded');
    await makeServeModel(dir, 'llama');
    const served = await loadServing({ model: dir, maxModelLen: 128, maxBatch: 8 });
    try {
      const sampling = { ...GREEDY, temperature: 0.9, topP: 0.95, topK: 50, seed: 1234 };
      const seeded = (seed: number) => request('seeded', [5, 6, 7], { sampling: { ...sampling, seed }, maxTokens: 24, n: 2 });
      const alone = await served.engine.generate(seeded(1234));
      const [batched] = await Promise.all([served.engine.generate(seeded(1234)), served.engine.generate(seeded(99)), served.engine.generate(request('seeded', [1, 2, 3, 4, 5, 6]))]);
      const other = await served.engine.generate(seeded(99));
      const ids = (r: typeof alone) => r.choices.map((c) => c.tokenIds);
      assert.deepEqual(ids(batched), ids(alone));
      assert.notDeepEqual(ids(other), ids(alone), 'another seed samples other tokens');
      assert.notDeepEqual(alone.choices[0].tokenIds, alone.choices[1].tokenIds, 'the n choices of one request differ');
    } finally {
      await served.close();
    }
  });

  it("generation_config.json's eos ids end a choice (a chat model's turn end), unless ignore_eos", async () => {
    const dir = path.join(root, 'eos');
    await makeServeModel(dir, 'llama');
    const probe = await loadServing({ model: dir, maxModelLen: 128 });
    const free = (await probe.engine.generate(request('eos', [5, 6, 7], { maxTokens: 12 }))).choices[0].tokenIds;
    await probe.close();
    // The first token that did not occur before it becomes an end-of-turn token.
    const at = free.findIndex((t, i) => i >= 3 && !free.slice(0, i).includes(t) && t !== 1);
    assert.ok(at > 0, `tokens: ${free}`);
    fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [1, free[at]] }));
    const served = await loadServing({ model: dir, maxModelLen: 128 });
    try {
      const stopped = (await served.engine.generate(request('eos', [5, 6, 7], { maxTokens: 12, ignoreEos: false }))).choices[0];
      assert.deepEqual(stopped.tokenIds, free.slice(0, at + 1));
      assert.equal(stopped.finishReason, 'stop');
      const ignored = (await served.engine.generate(request('eos', [5, 6, 7], { maxTokens: 12 }))).choices[0];
      assert.deepEqual(ignored.tokenIds, free);
    } finally {
      await served.close();
    }
  });

  it('a stop string spanning token boundaries ends the text before it, and a stream never sends part of it', async () => {
    const dir = path.join(root, 'stop');
    await makeServeModel(dir, 'llama');
    const tokenizer = await loadTokenizer(dir);
    const text = 'alpha beta gamma delta epsilon';
    const ids = tokenizer.encode(text);
    const pieces = ids.map((id) => tokenizer.decode([id]));
    const stop = 'lta e';
    // The stop starts inside a token and covers several token boundaries.
    const starts = new Set(pieces.map((_, i) => pieces.slice(0, i).join('').length));
    const at = text.indexOf(stop);
    assert.equal(pieces.join(''), text);
    assert.ok(!starts.has(at) && [...starts].filter((b) => b > at && b < at + stop.length).length >= 2, `tokens: ${JSON.stringify(pieces)}`);
    const expected = text.slice(0, text.indexOf(stop));
    const stream = new TextStream(tokenizer, [stop, 'never appears']);
    let sent = '';
    for (const id of ids) {
      sent += stream.push(id);
      assert.ok(expected.startsWith(sent), `sent text past the stop string: ${JSON.stringify(sent)}`);
      if (stream.stopped) break;
    }
    sent += stream.flush();
    assert.ok(stream.stopped);
    assert.equal(stream.full, expected);
    assert.equal(sent, stream.full);
  });
});
