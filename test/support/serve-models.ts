// Tiny models of each served architecture, with weights large enough that greedy choices are not
// near-ties, a LLaMA Pro + LoRA adapter written by the project's own export code, and the reference
// greedy decoder: full recomputation through the evaluation path, no cache.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, writeConfig, type ModelConfig } from '../../model/config.ts';
import { expandConfig, expandedLoader, expandedRawLoader, planExpansion } from '../../model/expand.ts';
import { expansionInfo } from '../../model/expand-sidecar.ts';
import { writeAdapter, writeMergedModel, type TrainedParts } from '../../model/export.ts';
import { createRandomModel, randomWeights } from '../../model/init.ts';
import { frozenWholeModel, type RangeProgram } from '../../model/llama/program.ts';
import { layerParamSpecs } from '../../model/params.ts';
import { openPretrained } from '../../model/pretrained.ts';
import { Rng } from '../../model/rng.ts';
import { writeCheckpoint } from '../../model/safetensors.ts';

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

/**
 * An adapter on `baseDir`: two LLaMA Pro blocks (random, non-zero) after blocks 1 and 3 of a 4-block
 * base, LoRA rank 4 on q_proj and down_proj of the original blocks; and the merged model of the same
 * parts, as `propipe train` writes them to adapter/ and final/.
 */
export function makeProLoraAdapter(baseDir: string, root: string): { adapter: string; merged: string } {
  const base = openPretrained(baseDir);
  const plan = planExpansion(base.config.numLayers, 2, 2);
  const config = expandConfig(base.config, plan);
  const rng = new Rng(17);
  const gauss = (n: number, std: number) => Float32Array.from({ length: n }, () => rng.nextGaussian() * std);
  const trained = new Map<string, Float32Array>();
  const linears: string[] = [];
  const rank = 4;
  plan.forEach((layer, i) => {
    for (const spec of layerParamSpecs(config, i)) {
      const size = spec.shape.reduce((a, b) => a * b, 1);
      if (layer.kind === 'new') trained.set(spec.name, spec.kind === 'norm' ? Float32Array.from({ length: size }, () => 1) : gauss(size, 0.2));
      else if (spec.kind === 'linear_weight' && /(q_proj|down_proj)\.weight$/.test(spec.name)) {
        const linear = spec.name.slice(0, -'.weight'.length);
        const [out, inp] = spec.shape;
        linears.push(linear);
        trained.set(`${linear}.lora_A.weight`, gauss(rank * inp, 0.3));
        trained.set(`${linear}.lora_B.weight`, gauss(out * rank, 0.3));
      }
    }
  });
  const expansion = expansionInfo(plan, 2, path.resolve(baseDir));
  const lora = { rank, alpha: 8, linears };
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
  const adapter = writeAdapter(path.join(root, 'adapter'), parts, { baseModel: path.resolve(baseDir), lora, expansion, run: { train_type: 'llamapro' } });
  return { adapter, merged };
}

/** Greedy continuation by recomputing the whole sequence each step, and each step's log-softmax. */
export async function greedyRecompute(program: RangeProgram, vocab: number, prompt: readonly number[], steps: number): Promise<{ tokens: number[]; logprobs: number[] }> {
  const ids = [...prompt];
  const logprobs: number[] = [];
  for (let s = 0; s < steps; s++) {
    const seq = BigInt64Array.from(ids.map(BigInt));
    const out = await program.forward({ batch: 1, seq: ids.length, inputIds: seq, labels: seq }, new Map());
    const logits = out.logits.data as Float32Array;
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
