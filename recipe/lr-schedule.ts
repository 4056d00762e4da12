// Learning rates: layer-wise over depth (bottom → top), times a per-stage warmup + cosine factor, so
// every newly unfrozen group starts gently.
import { layerOf } from '../model/llama/param-specs.ts';
import type { RunConfig } from './run-config.ts';
import { bottomLearningRate } from './run-config.ts';

/** The layer a tensor belongs to: its block index, -1 for the embedding, numLayers for norm/head. */
export function depthOf(name: string, numLayers: number): number {
  const l = layerOf(name);
  return typeof l === 'number' ? l : l === 'embed' ? -1 : numLayers;
}

/** Linear interpolation from the bottom LR (embedding, block 0) to the top LR (last block, head). */
export function layerLearningRate(run: RunConfig, name: string, numLayers: number): number {
  return depthLearningRate(run, depthOf(name, numLayers), numLayers);
}

/** The layer-wise rate at a depth (block index; -1 embedding, numLayers norm/head). */
function depthLearningRate(run: RunConfig, depth: number, numLayers: number): number {
  const bottom = bottomLearningRate(run);
  const top = run.learning_rate;
  const d = Math.min(Math.max(depth, 0), numLayers - 1);
  const frac = numLayers <= 1 ? 1 : d / (numLayers - 1);
  return bottom + (top - bottom) * frac;
}

export function warmupSteps(run: RunConfig, stageSteps: number): number {
  return run.warmup_steps ?? Math.floor(run.warmup_ratio * stageSteps);
}

/** Linear warmup from 0, then cosine decay to min_lr_ratio, within one stage (step counts from 0). */
export function stageLrFactor(step: number, stageSteps: number, warmup: number, minRatio: number): number {
  if (warmup > 0 && step < warmup) return (step + 1) / (warmup + 1);
  const span = Math.max(1, stageSteps - warmup);
  const progress = Math.min(1, (step - warmup) / span);
  return minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/** The learning rate of each listed block at one step: its layer-wise rate times the stage factor. */
export function blockLearningRates(run: RunConfig, layers: readonly number[], numLayers: number, factor: number): Record<string, number> {
  return Object.fromEntries(layers.map((l) => [l, depthLearningRate(run, l, numLayers) * factor]));
}
