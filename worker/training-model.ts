// The model a run trains: the base checkpoint, expanded on the fly (LLaMA Pro) or read as already
// expanded (a llama_pro.json sidecar), with the stage plan over its trainable units.
import type { ModelConfig } from '../model/hf/config.ts';
import { expandedLoader, expandedSource } from '../model/expand/expand.ts';
import { readExpansionSidecar } from '../model/expand/sidecar.ts';
import { FrozenWeights, type FrozenSource, type FrozenView } from '../model/llama/frozen.ts';
import { Quant4Weights } from '../model/quant/quant4-store.ts';
import type { LoraSpec, WeightLoader } from '../model/llama/params.ts';
import { initLora, loraNames } from '../model/train/lora.ts';
import { paramSpecs } from '../model/llama/param-specs.ts';
import { openPretrained, type Pretrained } from '../model/hf/pretrained.ts';
import { Rng, deriveSeed } from '../common/rng.ts';
import { loraAlpha, type RunConfig } from '../recipe/run-config.ts';
import { trainedStack, type TrainedStack } from '../recipe/layout.ts';

/** The trained stack (config, layout, stage plan) with the weights to read it from. */
export interface TrainingModel extends TrainedStack {
  base: Pretrained;
  /** Reads a tensor of the trained stack from the base checkpoint (expanding on the fly). */
  load: WeightLoader;
  /** The process's one copy of frozen weights, keyed by base tensor. */
  frozen: FrozenWeights;
  /** Frozen tensors under the trained stack's names (the student's and the teacher's: worker/teacher.ts). */
  frozenView: FrozenView;
  /** With `--quantize 4bit`: the process's one copy of the 4-bit frozen linears (worker/quantization.ts picks which). */
  quant4: Quant4Weights | null;
}

export function prepareModel(run: RunConfig): TrainingModel {
  const base = openPretrained(run.model);
  const stack = trainedStack(run, base.config, base.raw, readExpansionSidecar(run.model));
  const load = stack.onTheFly ? expandedLoader(base.load, stack.onTheFly) : base.load;
  const frozen = new FrozenWeights(run.frozen_dtype, (n) => base.checkpoint.readRaw(n));
  const plan = stack.onTheFly;
  const frozenView = frozen.view(plan ? (n) => expandedSource(n, plan) : undefined);
  const quant4 = run.quantize === '4bit' ? new Quant4Weights(load, run.quant_block_size) : null;
  return { ...stack, base, load, frozen, frozenView, quant4 };
}

/**
 * What a program of the current stage reads frozen tensors from: tensors that train in some stage are
 * fed from the live float32 values (no second copy), the rest from the shared frozen store.
 */
export function stageFrozen(model: TrainingModel, values: ReadonlyMap<string, Float32Array>, shapes: ReadonlyMap<string, number[]>): FrozenSource {
  return {
    tensor(name) {
      const v = values.get(name);
      return v ? { dtype: 'float32', shape: shapes.get(name)!, data: v } : model.frozenView.tensor(name);
    },
  };
}

/**
 * Starting values of every tensor that trains in some stage (copies of the weights, fresh LoRA), or of
 * those `keep` selects. LoRA factors are drawn for every adapter in a fixed order either way, so a
 * pipeline rank gets exactly the values the single-process run starts from.
 */
export function initialTrainables(model: TrainingModel, run: RunConfig, keep: (name: string) => boolean = () => true): Map<string, Float32Array> {
  const values = new Map<string, Float32Array>();
  const shapes = new Map(paramSpecs(model.config).map((s) => [s.name, s.shape]));
  const rng = new Rng(deriveSeed(run.seed, 0x10a));
  for (const linear of model.plan.loraLinears) {
    const [out, inp] = shapes.get(`${linear}.weight`)!;
    const { a, b } = initLora(run.lora_rank, inp, out, rng);
    const n = loraNames(linear);
    if (keep(n.a)) values.set(n.a, a);
    if (keep(n.b)) values.set(n.b, b);
  }
  for (const name of model.plan.everTrainable) {
    if (!values.has(name) && keep(name) && !/\.lora_[AB]\.weight$/.test(name)) values.set(name, Float32Array.from(model.load(name)));
  }
  return values;
}

/** Shapes of trainable tensors: HF shapes, and [rank, in] / [out, rank] for LoRA factors. */
export function trainableShapes(config: ModelConfig, names: Iterable<string>, loraRank: number): Map<string, number[]> {
  const specs = new Map(paramSpecs(config).map((s) => [s.name, s.shape]));
  const shapes = new Map<string, number[]>();
  for (const name of names) {
    const lora = /^(.*)\.lora_([AB])\.weight$/.exec(name);
    if (!lora) {
      const shape = specs.get(name);
      if (!shape) throw new Error(`'${name}' is not a parameter of this model`);
      shapes.set(name, shape);
      continue;
    }
    const [out, inp] = specs.get(`${lora[1]}.weight`)!;
    shapes.set(name, lora[2] === 'A' ? [loraRank, inp] : [out, loraRank]);
  }
  return shapes;
}

export function loraSpec(run: RunConfig, model: TrainingModel): LoraSpec | null {
  return model.plan.loraLinears.length ? { rank: run.lora_rank, alpha: loraAlpha(run), linears: new Set(model.plan.loraLinears) } : null;
}
