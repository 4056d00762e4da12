// The model a run trains: the base checkpoint, expanded on the fly (LLaMA Pro) or read as already
// expanded (a llama_pro.json sidecar), with the stage plan over its trainable units.
import type { ModelConfig } from '../model/config.ts';
import { expandConfig, expandedLoader, expandRawConfig, planExpansion, type ExpansionPlan } from '../model/expand.ts';
import { expansionInfo, planFromSidecar, readExpansionSidecar, type ExpansionInfo } from '../model/expand-sidecar.ts';
import type { WeightLoader } from '../model/llama/params.ts';
import { initLora, loraNames } from '../model/lora.ts';
import { paramSpecs } from '../model/params.ts';
import { openPretrained, type Pretrained } from '../model/pretrained.ts';
import { Rng, deriveSeed } from '../model/rng.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import { planStages, type LayerKind, type StagePlan } from '../recipe/stages.ts';

export interface TrainingModel {
  base: Pretrained;
  /** Config of the trained (possibly expanded) stack. */
  config: ModelConfig;
  raw: Record<string, unknown>;
  layout: LayerKind[];
  /** The LLaMA Pro expansion, when there is one (on the fly or from a sidecar). */
  expansion: ExpansionInfo | null;
  /** Reads a tensor of the trained stack from the base checkpoint (expanding on the fly). */
  load: WeightLoader;
  plan: StagePlan;
}

export function prepareModel(run: RunConfig): TrainingModel {
  const base = openPretrained(run.model);
  const sidecar = readExpansionSidecar(run.model);
  let plan: ExpansionPlan | null = null;
  let config = base.config;
  let raw = base.raw;
  let load: WeightLoader = base.load;
  let expansion: ExpansionInfo | null = null;

  if (run.train_type === 'llamapro' && run.llamapro_new_blocks > 0) {
    if (sidecar) throw new Error(`${run.model} is already expanded (llama_pro.json); drop llamapro_new_blocks to train its new blocks`);
    plan = planExpansion(config.numLayers, run.llamapro_new_blocks, run.llamapro_groups ?? run.llamapro_new_blocks);
    expansion = expansionInfo(plan, run.llamapro_groups ?? run.llamapro_new_blocks, run.model);
    load = expandedLoader(base.load, plan);
    raw = expandRawConfig(raw, plan);
    config = expandConfig(config, plan);
  } else if (run.train_type === 'llamapro') {
    if (!sidecar) throw new Error(`train_type llamapro needs llamapro_new_blocks ≥ 1, or a model expanded by 'propipe expand' (with llama_pro.json)`);
    plan = planFromSidecar(sidecar);
    expansion = sidecar;
  }
  const layout: LayerKind[] = plan ? plan.map((l) => ({ kind: l.kind, source: l.source })) : Array.from({ length: config.numLayers }, (_, i) => ({ kind: 'original' as const, source: i }));
  return { base, config, raw, layout, expansion, load, plan: planStages(run, config, layout) };
}

/** Starting values of every tensor that trains in some stage: copies of the weights, fresh LoRA. */
export function initialTrainables(model: TrainingModel, run: RunConfig): Map<string, Float32Array> {
  const values = new Map<string, Float32Array>();
  const shapes = new Map(paramSpecs(model.config).map((s) => [s.name, s.shape]));
  const rng = new Rng(deriveSeed(run.seed, 0x10a));
  for (const linear of model.plan.loraLinears) {
    const [out, inp] = shapes.get(`${linear}.weight`)!;
    const { a, b } = initLora(run.lora_rank, inp, out, rng);
    const n = loraNames(linear);
    values.set(n.a, a);
    values.set(n.b, b);
  }
  for (const name of model.plan.everTrainable) {
    if (!values.has(name)) values.set(name, Float32Array.from(model.load(name)));
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
