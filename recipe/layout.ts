// The stack a run trains, from config.json alone: the base as is, expanded on the fly (LLaMA Pro),
// or already expanded (llama_pro.json). The coordinator plans from this without touching weights.
import type { ModelConfig } from '../model/hf/config.ts';
import { expandConfig, expandRawConfig, planExpansion, type ExpansionPlan } from '../model/expand/expand.ts';
import { expansionInfo, planFromSidecar, type ExpansionInfo } from '../model/expand/sidecar.ts';
import type { RunConfig } from './run-config.ts';
import { checkModelType } from './swift-args.ts';
import { planStages, type LayerKind, type StagePlan } from './stages.ts';

export interface TrainedStack {
  config: ModelConfig;
  raw: Record<string, unknown>;
  layout: LayerKind[];
  /** Set when the run expands the base itself: weights are read through the expansion. */
  onTheFly: ExpansionPlan | null;
  expansion: ExpansionInfo | null;
  /** The stages and their freeze masks: the one place every part of propipe reads them from. */
  plan: StagePlan;
}

export function trainedStack(run: RunConfig, base: ModelConfig, raw: Record<string, unknown>, sidecar: ExpansionInfo | null): TrainedStack {
  checkModelType(run.model_type, raw, run.model);
  let plan: ExpansionPlan | null = null;
  let onTheFly: ExpansionPlan | null = null;
  let config = base;
  let expansion: ExpansionInfo | null = null;
  if (run.train_type === 'llamapro' && run.llamapro_new_blocks > 0) {
    if (sidecar) throw new Error(`${run.model} is already expanded (llama_pro.json); drop llamapro_new_blocks to train its new blocks`);
    const groups = run.llamapro_groups ?? run.llamapro_new_blocks;
    plan = onTheFly = planExpansion(config.numLayers, run.llamapro_new_blocks, groups);
    expansion = expansionInfo(plan, groups, run.model);
    raw = expandRawConfig(raw, plan);
    config = expandConfig(config, plan);
  } else if (run.train_type === 'llamapro') {
    if (!sidecar) throw new Error(`train_type llamapro needs llamapro_new_blocks ≥ 1, or a model expanded by 'propipe expand' (with llama_pro.json)`);
    plan = planFromSidecar(sidecar);
    expansion = sidecar;
  }
  const layout: LayerKind[] = plan ? plan.map((l) => ({ kind: l.kind, source: l.source })) : Array.from({ length: config.numLayers }, (_, i) => ({ kind: 'original' as const, source: i }));
  return { config, raw, layout, onTheFly, expansion, plan: planStages(run, config, layout) };
}
