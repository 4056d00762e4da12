// One pipeline rank's share of a run: the tensors it owns, its optimizer state, and the program of its
// block range under the current stage's freeze mask.
import { childLog } from '../common/log.ts';
import { AdamW } from '../model/train/adamw.ts';
import type { LoraSpec, QuantizedMatMul } from '../model/llama/params.ts';
import { RangeProgram } from '../model/llama/program.ts';
import type { BlockRange } from '../model/llama/range-graph.ts';
import { layerOf, paramSpecs } from '../model/llama/param-specs.ts';
import { rangeTrains, type FreezeMask } from '../recipe/freeze-mask.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import { quantizationFor } from './quantization.ts';
import { RangeTeacher } from './teacher.ts';
import { EMBEDDING } from './tied-embedding.ts';
import type { ModelConfig } from '../model/hf/config.ts';
import { roles, type RankRole } from '../recipe/schedule.ts';
import { initialTrainables, loraSpec, stageFrozen, trainableShapes, type TrainingModel } from './training-model.ts';

const log = childLog({ component: 'rank' });

/** The one rank that owns `name` (writes it in exports). */
export function ownsTensor(range: BlockRange, name: string): boolean {
  const l = layerOf(name);
  if (l === 'embed') return range.embed;
  if (l === 'norm' || l === 'head') return range.head;
  return l >= range.start && l < range.end;
}

/** Whether a rank holds `name`: what it owns, and a tied embedding on the rank with the head too. */
export function holdsTensor(config: Pick<ModelConfig, 'tieWordEmbeddings'>, range: BlockRange, name: string): boolean {
  return ownsTensor(range, name) || (name === EMBEDDING && range.head && config.tieWordEmbeddings);
}

/** Which ranks run backward under a mask: a rank does when it or any rank below it trains. */
export function backwardRanks(partition: readonly BlockRange[], mask: FreezeMask): boolean[] {
  const trains = partition.map((r) => rangeTrains(mask, r));
  let seen = false;
  return trains.map((t) => (seen = seen || t));
}

export class Rank {
  readonly values: Map<string, Float32Array>;
  readonly shapes: Map<string, number[]>;
  readonly optimizer: AdamW;
  readonly lora: LoraSpec | null;
  private readonly quantized: QuantizedMatMul | null;
  program: RangeProgram | null = null;
  /** Distillation: the original blocks of this rank's range, over the same frozen buffers (teacher.ts). */
  teacher: RangeTeacher | null = null;
  role!: RankRole;
  stage = -1;
  /** Build the backward as input- and weight-gradient graphs (zero-bubble schedules). */
  splitBackward = false;
  /** This rank holds one of the two copies of a trainable tied embedding (tied-embedding.ts). */
  readonly tiedEmbedding: boolean;

  constructor(
    readonly run: RunConfig,
    readonly model: TrainingModel,
    readonly rank: number,
    readonly partition: readonly BlockRange[],
  ) {
    const range = partition[rank];
    this.tiedEmbedding = model.config.tieWordEmbeddings && partition.length > 1 && (range.embed || range.head) && model.plan.everTrainable.includes(EMBEDDING);
    this.values = initialTrainables(model, run, (n) => holdsTensor(model.config, range, n));
    this.shapes = trainableShapes(model.config, this.values.keys(), run.lora_rank);
    this.optimizer = new AdamW({ beta1: run.adam_beta1, beta2: run.adam_beta2, eps: run.adam_epsilon, weightDecay: run.weight_decay });
    this.lora = loraSpec(run, model);
    this.quantized = quantizationFor(model);
  }

  get range(): BlockRange {
    return this.partition[this.rank];
  }

  /** Builds this rank's program for `stage`; a stage transition is a new program. */
  async enterStage(stage: number): Promise<void> {
    if (stage === this.stage && this.program) return;
    await this.program?.release();
    const { trainable, mask } = this.model.plan.stages[stage];
    this.retainFrozen();
    this.role = roles(backwardRanks(this.partition, mask))[this.rank];
    this.program = await RangeProgram.create({
      config: this.model.config,
      range: this.range,
      trainable: new Set(trainable.filter((n) => holdsTensor(this.model.config, this.range, n))),
      load: (n) => this.values.get(n) ?? this.model.load(n),
      frozen: stageFrozen(this.model, this.values, this.shapes),
      inputGrad: this.role.gradToPrev,
      lora: this.lora,
      quantized: this.quantized,
      distill: this.distills ? { weight: this.run.distill_weight, temperature: this.run.distill_temperature } : null,
      teacherFrozen: this.model.frozenView,
      device: this.run.device,
      threads: this.run.threads,
      splitBackward: this.splitBackward,
      // The executor runs each micro-batch forward, then backward on the same Batch: the backward starts
      // at the first trainable block from the hidden state the forward kept there.
      stashPrefix: true,
      // gradient_checkpointing: false keeps each micro-batch's activations from its forward run (ranks below the head).
      keepActivations: !this.run.gradient_checkpointing,
      packed: this.run.packing,
    });
    // The teacher does not depend on the mask: one per range, kept across stages.
    if (this.run.distill_weight > 0 && !this.teacher) this.teacher = await RangeTeacher.create(this.model, this.range, this.run, this.quantized);
    this.stage = stage;
    const q4 = this.model.quant4;
    if (q4) log.info({ stage, weights: q4.weights, bytes: q4.bytes }, '4-bit weights held once for every session');
  }

  /** Before building: only this range's frozen weights (float and 4-bit) stay resident (the teacher reads a subset of them). */
  private retainFrozen(): void {
    const held = paramSpecs(this.model.config).filter((s) => holdsTensor(this.model.config, this.range, s.name)).map((s) => s.name);
    this.model.frozen.retainOnly(new Set(held.map((n) => this.model.frozenView.keyOf(n))));
    this.model.quant4?.retainOnly(new Set(held));
  }

  /** Trainable values this rank counts as its own (the last rank's copy of a tied embedding is rank 0's). */
  get trainableParams(): number {
    let n = 0;
    for (const [name, v] of this.values) if (ownsTensor(this.range, name)) n += v.length;
    return n;
  }

  /** The KL term is computed where the logits are: the rank with the head. */
  get distills(): boolean {
    return this.run.distill_weight > 0 && this.range.head;
  }

  async release(): Promise<void> {
    await this.program?.release();
    await this.teacher?.release();
    this.program = null;
    this.teacher = null;
  }
}
