// Tiny models of each served architecture, with weights large enough that greedy choices are not
// near-ties, a LLaMA Pro + LoRA adapter written by the project's own export code, and the reference
// greedy decoder: full recomputation through the evaluation path, no cache.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, writeConfig, type ModelConfig } from '../../model/hf/config.ts';
import { expandConfig, expandedLoader, expandedRawLoader, planExpansion } from '../../model/expand/expand.ts';
import { expansionInfo } from '../../model/expand/sidecar.ts';
import { writeAdapter, writeMergedModel, type TrainedParts } from '../../model/hf/export.ts';
import { createRandomModel, randomWeights } from '../../model/hf/init.ts';
import { frozenWholeModel, type RangeProgram } from '../../model/llama/program.ts';
import { layerParamSpecs } from '../../model/llama/param-specs.ts';
import { openPretrained } from '../../model/hf/pretrained.ts';
import { Rng } from '../../common/rng.ts';
import { writeCheckpoint } from '../../model/hf/checkpoint.ts';

export type ServeArch = 'llama' | 'qwen2' | 'mistral';
export const MISTRAL_WINDOW = 8;

export function tempRoot(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-serve-'));
}

/** llama: GQA, untied head; qwen2: q/k/v biases (random, not zero), tied head; mistral: a sliding window of 8. */
export async function makeServeModel(dir: string, arch: ServeArch, layers = 2): Promise<ModelConfig> {
  const qwen = arch === 'qwen2';
  await createRandomModel(dir, { layers, hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, vocab: 300, seed: 11, tie: qwen, qkvBias: qwen, initStd: 0.25 });
  let { config, raw } = loadConfig(dir);
  if (arch === 'mistral') {
    config = { ...config, arch: 'mistral', slidingWindow: MISTRAL_WINDOW };
    writeConfig(dir, config, raw);
  }
  if (qwen) {
    const rng = new Rng(3);
    const weights = randomWeights(config, 11, 0.25).map((t) =>
      t.name.endsWith('.bias') ? { ...t, data: Float32Array.from(t.data as Float32Array, () => rng.nextGaussian() * 0.5) } : t,
    );
    writeCheckpoint(dir, weights);
  }
  return config;
}

export interface AdapterShape {
  /** LLaMA Pro blocks, spread over 2 groups (0: none). */
  newBlocks: number;
  loraRank: number;
  /** Linears of the original blocks that get LoRA. */
  loraOn: RegExp;
  /** Also retrain the final norm and lm_head (train_head_last_stage). */
  head?: boolean;
  seed?: number;
}

/**
 * An adapter on `baseDir` and the merged model of the same parts, as `propipe train` writes them to
 * adapter/ and final/: random non-zero LLaMA Pro blocks, LoRA factors and head, so each part shows.
 */
export function makeAdapter(baseDir: string, root: string, shape: AdapterShape): { adapter: string; merged: string } {
  const base = openPretrained(baseDir);
  const L = base.config.numLayers;
  const plan = shape.newBlocks > 0 ? planExpansion(L, shape.newBlocks, 2) : Array.from({ length: L }, (_, i) => ({ kind: 'original' as const, source: i }));
  const config = expandConfig(base.config, plan);
  const rng = new Rng(shape.seed ?? 17);
  const gauss = (n: number, std: number) => Float32Array.from({ length: n }, () => rng.nextGaussian() * std);
  const trained = new Map<string, Float32Array>();
  const linears: string[] = [];
  const rank = shape.loraRank;
  plan.forEach((layer, i) => {
    for (const spec of layerParamSpecs(config, i)) {
      const size = spec.shape.reduce((a, b) => a * b, 1);
      if (layer.kind === 'new') trained.set(spec.name, spec.kind === 'norm' ? Float32Array.from({ length: size }, () => 1) : gauss(size, 0.2));
      else if (rank > 0 && spec.kind === 'linear_weight' && shape.loraOn.test(spec.name)) {
        const linear = spec.name.slice(0, -'.weight'.length);
        const [out, inp] = spec.shape;
        linears.push(linear);
        trained.set(`${linear}.lora_A.weight`, gauss(rank * inp, 0.3));
        trained.set(`${linear}.lora_B.weight`, gauss(out * rank, 0.3));
      }
    }
  });
  if (shape.head) {
    trained.set('model.norm.weight', gauss(config.hiddenSize, 0.3).map((v) => 1 + v));
    if (!config.tieWordEmbeddings) trained.set('lm_head.weight', gauss(config.vocabSize * config.hiddenSize, 0.25));
  }
  const expansion = shape.newBlocks > 0 ? expansionInfo(plan, 2, path.resolve(baseDir)) : null;
  const lora = rank > 0 ? { rank, alpha: 2 * rank, linears } : null;
  const parts: TrainedParts = {
    config,
    raw: base.raw,
    readBase: expandedRawLoader((n) => base.checkpoint.readRaw(n), plan),
    loadBase: expandedLoader(base.load, plan),
    trained,
    lora,
    expansion,
  };
  const merged = writeMergedModel(path.join(root, 'final'), parts, baseDir);
  const adapter = writeAdapter(path.join(root, 'adapter'), parts, { baseModel: path.resolve(baseDir), lora, expansion, run: { train_type: expansion ? 'llamapro' : 'lora' } });
  return { adapter, merged };
}

/** Two LLaMA Pro blocks after blocks 1 and 3 of a 4-block base, LoRA rank 4 on q_proj and down_proj of the originals. */
export function makeProLoraAdapter(baseDir: string, root: string): { adapter: string; merged: string } {
  return makeAdapter(baseDir, root, { newBlocks: 2, loraRank: 4, loraOn: /(q_proj|down_proj)\.weight$/ });
}

/** Greedy continuation by recomputing the whole sequence each step, and each step's log-softmax. */
export async function greedyRecompute(program: RangeProgram, vocab: number, prompt: readonly number[], steps: number): Promise<{ tokens: number[]; logprobs: number[] }> {
  const ids = [...prompt];
  const logprobs: number[] = [];
  for (let s = 0; s < steps; s++) {
    const seq = BigInt64Array.from(ids.map(BigInt));
    const out = await program.forward({ batch: 1, seq: ids.length, inputIds: seq, labels: seq }, new Map());
    const logits = out.logits;
    const off = (ids.length - 1) * vocab;
    let best = 0;
    let max = -Infinity;
    for (let i = 0; i < vocab; i++) if (logits[off + i] > max) [max, best] = [logits[off + i], i];
    let sum = 0;
    for (let i = 0; i < vocab; i++) sum += Math.exp(logits[off + i] - max);
    logprobs.push(-Math.log(sum));
    ids.push(best);
  }
  return { tokens: ids.slice(prompt.length), logprobs };
}

/** greedyRecompute on the model in `modelDir`, through the evaluation path (frozenWholeModel). */
export async function referenceGreedy(modelDir: string, prompt: readonly number[], steps: number): Promise<{ tokens: number[]; logprobs: number[] }> {
  const m = openPretrained(modelDir);
  const program = await frozenWholeModel(m.config, m.load, { logits: true });
  try {
    return await greedyRecompute(program, m.config.vocabSize, prompt, steps);
  } finally {
    await program.release();
  }
}
