// Serving benchmark: time to first token and decode tokens/s of `propipe serve`'s engine at 1, 4 and
// 16 concurrent requests on a mid-size model (≥ 250M parameters), against decoding without a cache
// (the evaluation path recomputing the whole sequence per token) and against the memory-bandwidth
// bound of batch-1 decode (bytes of the weights read per step ÷ this machine's bandwidth, measured
// in the same run). Also: requests for two adapters run in turn vs one model's requests batched.
//
//   npm run bench:serve [-- --model DIR] [--prompt 32] [--tokens 32] [--threads N]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeConfig } from '../model/hf/config.ts';
import { Graph } from '../model/graph/graph.ts';
import { CompiledGraph } from '../model/graph/session.ts';
import { createRandomModel, randomModelConfig, randomWeights } from '../model/hf/init.ts';
import { frozenWholeModel } from '../model/llama/program.ts';
import { paramCount } from '../model/llama/param-specs.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { writeCheckpoint } from '../model/hf/checkpoint.ts';
import type { GenerationRequest } from '../serve/sequence.ts';
import { loadServing, type Loaded } from '../serve/serve.ts';
import { greedyRecompute, makeAdapter, makeProLoraAdapter } from '../test/support/serve-models.ts';
import { defaultThreads, Flags, hostInfo, info, median, printJson, Rng, round, timeRuns } from './common.ts';

const MID = { layers: 18, hidden: 1024, heads: 16, kvHeads: 4, intermediate: 2816, vocab: 32000 };

/** A random Llama model of MID's shape (267M parameters); its tokenizer is small, which decode does not notice. */
async function midModel(dir: string): Promise<void> {
  await createRandomModel(dir, { ...MID, vocab: 512, seed: 1 });
  const { config, raw } = randomModelConfig({ ...MID, initStd: 0.02 });
  writeConfig(dir, config, raw);
  writeCheckpoint(dir, randomWeights(config, 1, 0.02));
}

/**
 * Read bandwidth as ONNX Runtime streams it: ReduceSum over a 512 MiB input (an input, not an
 * initializer, which would be constant-folded; the binding hands ORT the host buffer without a copy).
 */
async function memoryBandwidth(threads: number): Promise<number> {
  const n = 128 * 1024 * 1024;
  const g = new Graph('bandwidth');
  const x = g.input('x', 'float32', [n]);
  g.output(g.rename(g.op('ReduceSum', [x], { keepdims: 0 }), 'y'));
  const s = await CompiledGraph.create(g, { threads });
  const data = new Rng(1).uniformArray(n, 1);
  const times = await timeRuns(() => s.run({ x: { dtype: 'float32', shape: [n], data } }), 2, 5);
  await s.release();
  return (n * 4) / (Math.min(...times) / 1000);
}

interface LevelResult {
  concurrent: number;
  ttft_ms_median: number;
  ttft_ms_max: number;
  /** Generated tokens per second of decode steps, all rows together. */
  decode_tokens_per_s: number;
  decode_tokens_per_s_per_request: number;
  /** All generated tokens over the wall time from first submit to last finish. */
  end_to_end_tokens_per_s: number;
}

async function counterSum(c: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await c.get()).values.reduce((a, v) => a + v.value, 0);
}

async function runLevel(served: Loaded, models: string[], concurrent: number, prompt: number, tokens: number, rng: Rng): Promise<LevelResult> {
  const m = served.metrics;
  m.ttft.reset();
  m.decodeStep.reset();
  const generatedBefore = await counterSum(m.generationTokens);
  const vocab = served.stack.config.vocabSize;
  const request = (i: number): GenerationRequest => ({
    model: models[i % models.length],
    prompt: Array.from({ length: prompt }, () => 3 + rng.nextInt(vocab - 3)),
    maxTokens: tokens,
    n: 1,
    sampling: { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1, seed: null },
    stop: [],
    logprobs: null,
    ignoreEos: true,
  });
  const t0 = performance.now();
  const ttfts: number[] = [];
  await Promise.all(
    Array.from({ length: concurrent }, async (_, i) => {
      const r = request(i);
      const submitted = performance.now();
      let first = true;
      // The first chosen token, whether or not it is yet printable text.
      r.onToken = () => {
        if (first) ttfts.push(performance.now() - submitted);
        first = false;
      };
      await served.engine.generate(r);
      if (first) ttfts.push(performance.now() - submitted);
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const generated = (await counterSum(m.generationTokens)) - generatedBefore;
  const steps = (await m.decodeStep.get()).values.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0;
  const decoded = generated - concurrent;
  return {
    concurrent,
    ttft_ms_median: round(median(ttfts), 1),
    ttft_ms_max: round(Math.max(...ttfts), 1),
    decode_tokens_per_s: round(decoded / steps, 2),
    decode_tokens_per_s_per_request: round(decoded / steps / concurrent, 2),
    end_to_end_tokens_per_s: round(generated / wall, 2),
  };
}

/** Greedy tokens/s by recomputing the whole sequence for each new token, as evaluation would. */
async function noCacheRate(dir: string, prompt: number, tokens: number, threads: number): Promise<number> {
  const m = openPretrained(dir);
  const program = await frozenWholeModel(m.config, m.load, { logits: true, threads });
  const rng = new Rng(5);
  const ids = Array.from({ length: prompt }, () => 3 + rng.nextInt(m.config.vocabSize - 3));
  const t0 = performance.now();
  await greedyRecompute(program, m.config.vocabSize, ids, tokens);
  const rate = tokens / ((performance.now() - t0) / 1000);
  await program.release();
  return rate;
}

async function main(): Promise<void> {
  const f = new Flags(process.argv.slice(2));
  f.check(['model', 'prompt', 'tokens', 'threads', 'recompute-tokens']);
  const threads = f.int('threads', defaultThreads());
  const prompt = f.int('prompt', 32);
  const tokens = f.int('tokens', 32);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-serve-'));
  try {
    const dir = f.str('model') ?? path.join(root, 'mid');
    if (!f.str('model')) {
      info(`writing a random ${JSON.stringify(MID)} model`);
      await midModel(dir);
    }
    const config = openPretrained(dir).config;
    const params = paramCount(config);
    // Decode reads every weight once per step except the embedding (a row gather on the host).
    const weightBytes = (params - (config.tieWordEmbeddings ? 0 : config.vocabSize * config.hiddenSize)) * 4;
    info('measuring memory bandwidth');
    const bandwidth = await memoryBandwidth(threads);
    const boundTokensPerS = bandwidth / weightBytes;

    info('making a LLaMA Pro + LoRA adapter and a LoRA adapter (rank 8 on q, k, v, o)');
    const pro = makeProLoraAdapter(dir, path.join(root, 'pro'));
    const lora = makeAdapter(dir, path.join(root, 'lora'), { newBlocks: 0, loraRank: 8, loraOn: /(q_proj|k_proj|v_proj|o_proj)\.weight$/ });
    const adapters = [{ name: 'pro', dir: pro.adapter }, { name: 'lora', dir: lora.adapter }];
    const served = await loadServing({ model: dir, adapters, servedModelName: 'base', maxModelLen: 2048, maxBatch: 16, threads });
    const levels: LevelResult[] = [];
    let mixed: Record<string, LevelResult> = {};
    try {
      const rng = new Rng(7);
      info('warm-up');
      await runLevel(served, ['base'], 1, prompt, 4, rng);
      for (const c of [1, 4, 16]) {
        info(`${c} concurrent`);
        levels.push(await runLevel(served, ['base'], c, prompt, tokens, rng));
      }
      info('8 concurrent: the base alone, base + LoRA adapter in one batch, base + LLaMA Pro adapter in turn');
      mixed = {
        base_only: await runLevel(served, ['base'], 8, prompt, tokens, rng),
        base_and_lora_one_batch: await runLevel(served, ['base', 'lora'], 8, prompt, tokens, rng),
        base_and_llama_pro_in_turn: await runLevel(served, ['base', 'pro'], 8, prompt, tokens, rng),
      };
    } finally {
      await served.close();
    }
    info('decoding without a cache');
    const noCache = await noCacheRate(dir, prompt, f.int('recompute-tokens', 8), threads);
    const b1 = levels[0].decode_tokens_per_s;
    printJson({
      benchmark: 'serve',
      host: hostInfo(threads),
      model: { ...MID, vocab: config.vocabSize, layers: config.numLayers, parameters: params, weight_bytes_per_decode_step: weightBytes, dtype: 'float32' },
      prompt_tokens: prompt,
      generated_tokens: tokens,
      memory_bandwidth_gb_s: round(bandwidth / 1e9, 2),
      bandwidth_bound_tokens_per_s: round(boundTokensPerS, 2),
      levels,
      batch1_fraction_of_bandwidth_bound: round(b1 / boundTokensPerS, 3),
      batch16_speedup_over_batch1: round(levels[2].decode_tokens_per_s / b1, 2),
      no_cache_tokens_per_s: round(noCache, 3),
      cache_speedup_at_batch1: round(b1 / noCache, 1),
      adapters: {
        note: 'the base and LoRA-only adapters share a batch (stacked factors, per-row mask); an adapter with blocks of its own has its own batch, batches run in turn',
        ...mixed,
      },
    });
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

await main();
