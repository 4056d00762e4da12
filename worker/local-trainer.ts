// The whole recipe in one process: stages from recipe/, one RangeProgram over the full stack per
// freeze mask, AdamW on the host. The pipeline runs the same recipe split across ranks.
import path from 'node:path';
import { accumulateGrads, AdamW, clipScale, sumOfSquares } from '../model/adamw.ts';
import { frozenWholeModel, RangeProgram } from '../model/llama/program.ts';
import { wholeModel } from '../model/llama/range-graph.ts';
import { childLog } from '../model/log.ts';
import { optionalTokenizer } from '../model/pretrained.ts';
import { deriveSeed } from '../model/rng.ts';
import { makeBatch, shuffledBatches, type PositionedBatch } from '../recipe/batch.ts';
import { stageSteps as stageLength } from '../recipe/stage-length.ts';
import { readJsonl, type Example } from '../recipe/data.ts';
import { EarlyStopper } from '../recipe/early-stop.ts';
import { chunks } from '../recipe/examples.ts';
import { layerLearningRate, stageLrFactor, warmupSteps } from '../recipe/lr-schedule.ts';
import { parseRunConfig, type RunConfig, type RunConfigInput } from '../recipe/run-config.ts';
import { describeStage } from '../recipe/stages.ts';
import { exportRun } from './export-run.ts';
import { JobAborted } from './faults.ts';
import { latestCheckpoint, saveCheckpoint, type TrainerState } from './checkpoint.ts';
import { MetricsLog } from './metrics-log.ts';
import { Progress } from './progress.ts';
import { memoryReport, quantizationFor, type MemoryReport } from './quantization.ts';
import { initialTrainables, loraSpec, prepareModel, trainableShapes, type TrainingModel } from './training-model.ts';

const log = childLog({ component: 'trainer' });
const MAX_BAD_STEPS = 3;

export interface StageSummary {
  index: number;
  steps: number;
  ended: 'epochs' | 'steps' | 'early-stop' | 'max-steps';
  bestValLoss: number | null;
}

export interface TrainResult {
  steps: number;
  tokens: number;
  stages: StageSummary[];
  finalTrainLoss: number;
  finalValLoss: number | null;
  tokensPerSec: number;
  trainableParams: number;
  peakRssBytes: number;
  distillSeconds: number;
  /** Bytes of frozen linear weights as stored (4-bit when quantized), and of trainable state. */
  memory: MemoryReport;
  finalDir: string;
  adapterDir: string;
}

export class Trainer {
  readonly run: RunConfig;
  private readonly progress = new Progress();

  constructor(args: RunConfigInput | RunConfig) {
    this.run = parseRunConfig(args, 'Trainer arguments');
  }

  async train(): Promise<TrainResult> {
    const run = this.run;
    const model = prepareModel(run);
    const tokenizer = await optionalTokenizer(run.model);
    const padId = tokenizer?.padId ?? model.config.padTokenId ?? 0;
    const train = await readJsonl(run.dataset, { tokenizer, vocabSize: model.config.vocabSize, maxLength: run.max_length });
    const val = run.val_dataset ? await readJsonl(run.val_dataset, { tokenizer, vocabSize: model.config.vocabSize, maxLength: run.max_length }) : null;
    if (run.early_stop_patience > 0 && !val) throw new Error('early_stop_patience needs val_dataset (validation loss decides when a stage ends)');

    const values = initialTrainables(model, run);
    const shapes = trainableShapes(model.config, values.keys(), run.lora_rank);
    const optimizer = new AdamW({ beta1: run.adam_beta1, beta2: run.adam_beta2, eps: run.adam_epsilon, weightDecay: run.weight_decay });
    let state: TrainerState = { step: 0, stage: 0, stageStep: 0, position: { epoch: 0, index: 0 }, earlyStop: { best: null, bad: 0 }, tokens: 0 };
    if (run.resume) {
      const ck = latestCheckpoint(run.output_dir);
      if (ck) {
        for (const [n, v] of ck.params) values.set(n, v);
        for (const [n, m] of ck.moments) optimizer.state.set(n, m);
        state = ck.manifest.state;
        log.info({ checkpoint: ck.dir, step: state.step, stage: state.stage }, 'resuming');
      } else log.info({ outputDir: run.output_dir }, 'no committed checkpoint to resume from; starting fresh');
    }

    const trainableParams = [...values.values()].reduce((s, v) => s + v.length, 0);
    const memory = memoryReport(run, model, trainableParams);
    log.info({ trainType: run.train_type, layers: model.config.numLayers, stages: model.plan.stages.length, trainableParams, examples: train.examples.length, ...memory }, 'run prepared');
    const lora = loraSpec(run, model);
    const quantized = quantizationFor(run, model);
    const teacher = run.distill_weight > 0 ? await this.teacher(model) : null;
    const metrics = new MetricsLog(run.output_dir);
    const stopper = new EarlyStopper(run.early_stop_patience, run.early_stop_min_delta);
    const summaries: StageSummary[] = [];
    const load = (n: string) => values.get(n) ?? model.load(n);
    let peakRss = process.memoryUsage().rss;
    let trainSeconds = 0;
    let distillSeconds = 0;
    let lastLoss = NaN;
    let lastVal: number | null = null;
    let badSteps = 0;

    for (let stageIdx = state.stage; stageIdx < model.plan.stages.length; stageIdx++) {
      const stage = model.plan.stages[stageIdx];
      const program = await RangeProgram.create({
        config: model.config,
        range: wholeModel(model.config),
        trainable: new Set(stage.trainable),
        load,
        inputGrad: false,
        lora,
        quantized,
        distill: teacher ? { weight: run.distill_weight, temperature: run.distill_temperature } : null,
        device: run.device,
        threads: run.threads,
      });
      const stageSteps = stageLength(run, train.examples.length);
      const warmup = warmupSteps(run, stageSteps);
      if (state.stageStep === 0) stopper.reset();
      else stopper.state = state.earlyStop;
      const why = stageIdx === 0 ? 'first stage' : 'previous stage ended';
      log.info({ stage: stageIdx, layers: stage.layers, tensors: stage.trainable.length, steps: stageSteps, warmup, why }, `${describeStage(model.plan, stage)} — starting (${why})`);
      metrics.write({ event: 'stage_start', stage: stageIdx, layers: stage.layers, steps: stageSteps, why });
      this.progress.startStage(`stage ${stageIdx + 1}/${model.plan.stages.length}`, stageSteps, state.stageStep);

      const stream = shuffledBatches(train.examples, { batchSize: run.per_device_train_batch_size, seed: deriveSeed(run.seed, stageIdx), start: state.position, dropLast: false, padId });
      let ended: StageSummary['ended'] = run.steps_per_stage ? 'steps' : 'epochs';
      while (state.stageStep < stageSteps) {
        if (run.max_steps !== undefined && state.step >= run.max_steps) {
          ended = 'max-steps';
          break;
        }
        const t0 = performance.now();
        const micro: PositionedBatch[] = [];
        for (let k = 0; k < run.gradient_accumulation_steps; k++) micro.push(stream.next().value as PositionedBatch);
        const tokens = micro.reduce((s, b) => s + b.targetTokens, 0);
        const grads = new Map<string, Float32Array>();
        let lossSum = 0;
        let klSum = 0;
        for (const b of micro) {
          let teacherLogits: Float32Array | undefined;
          if (teacher) {
            const td = performance.now();
            teacherLogits = (await teacher.forward(b, new Map())).logits.data as Float32Array;
            distillSeconds += (performance.now() - td) / 1000;
          }
          const r = await program.backward({ ...b, teacherLogits }, values, { lossScale: 1 / tokens });
          lossSum += r.lossSum!;
          klSum += r.klSum ?? 0;
          accumulateGrads(grads, r.grads);
        }
        const gradNorm = Math.sqrt(sumOfSquares(grads.values()));
        const scale = clipScale(gradNorm, run.max_grad_norm);
        const factor = stageLrFactor(state.stageStep, stageSteps, warmup, run.min_lr_ratio);
        if (!Number.isFinite(gradNorm) || !Number.isFinite(lossSum)) {
          // NaN or Inf never reaches the weights; a run that keeps producing them stops.
          badSteps++;
          log.warn({ step: state.step, stage: stageIdx, consecutive: badSteps }, 'non-finite loss or gradient: step skipped, weights unchanged');
          if (badSteps >= MAX_BAD_STEPS) throw new JobAborted(`${badSteps} consecutive steps had a non-finite loss or gradient (last: step ${state.step + 1}); lower the learning rate, check the data, or resume from an earlier checkpoint`);
        } else {
          badSteps = 0;
          for (const [n, g] of grads) optimizer.update(n, values.get(n)!, g, layerLearningRate(run, n, model.config.numLayers) * factor, scale);
        }
        const seconds = (performance.now() - t0) / 1000;
        trainSeconds += seconds;
        state = { ...state, step: state.step + 1, stageStep: state.stageStep + 1, position: micro[micro.length - 1].next, tokens: state.tokens + tokens };
        lastLoss = lossSum / tokens;
        peakRss = Math.max(peakRss, process.memoryUsage().rss);
        const tps = tokens / seconds;
        metrics.write({ step: state.step, stage: stageIdx, loss: lastLoss, kl: teacher ? klSum / tokens : undefined, grad_norm: gradNorm, clip_scale: scale, lr: run.learning_rate * factor, tokens, tokens_per_s: tps });
        if (state.step % run.logging_steps === 0) log.info({ step: state.step, stage: stageIdx, loss: lastLoss, gradNorm, lrFactor: factor, tokensPerSec: Math.round(tps) }, 'train');
        this.progress.update(state.stageStep, { stage: stageIdx, stages: model.plan.stages.length, step: state.step, loss: lastLoss, tokensPerSec: tps });

        const atEval = val && run.eval_steps > 0 && state.step % run.eval_steps === 0;
        let stop = false;
        if (atEval) {
          lastVal = await evalLoss(program, val.examples, run.per_device_eval_batch_size, padId, values);
          const o = stopper.observe(lastVal);
          state = { ...state, earlyStop: stopper.state };
          metrics.write({ step: state.step, stage: stageIdx, eval_loss: lastVal, improved: o.improved });
          log.info({ step: state.step, stage: stageIdx, evalLoss: lastVal, improved: o.improved, bad: stopper.state.bad }, 'eval');
          stop = o.stop;
        }
        if (run.save_steps > 0 && state.step % run.save_steps === 0) this.save(state, values, optimizer, shapes, model);
        if (stop) {
          ended = 'early-stop';
          log.info({ stage: stageIdx, step: state.step, patience: run.early_stop_patience, best: stopper.state.best }, `stage ${stageIdx + 1} ended early: validation loss has not improved for ${run.early_stop_patience} evaluations`);
          break;
        }
      }
      this.progress.stop();
      if (val && ended !== 'early-stop') lastVal = await evalLoss(program, val.examples, run.per_device_eval_batch_size, padId, values);
      summaries.push({ index: stageIdx, steps: state.stageStep, ended, bestValLoss: stopper.state.best ?? lastVal });
      metrics.write({ event: 'stage_end', stage: stageIdx, steps: state.stageStep, ended, eval_loss: lastVal });
      log.info({ stage: stageIdx, steps: state.stageStep, ended, evalLoss: lastVal }, `stage ${stageIdx + 1} ended (${ended})`);
      await program.release();
      if (ended === 'max-steps') break;
      state = { ...state, stage: stageIdx + 1, stageStep: 0, position: { epoch: 0, index: 0 }, earlyStop: { best: null, bad: 0 } };
    }
    await teacher?.release();
    if (run.save_steps > 0) this.save(state, values, optimizer, shapes, model);
    metrics.close();

    const { finalDir, adapterDir } = exportRun(run, model, values, lora);
    return {
      steps: state.step,
      tokens: state.tokens,
      stages: summaries,
      finalTrainLoss: lastLoss,
      finalValLoss: lastVal,
      tokensPerSec: trainSeconds > 0 ? state.tokens / trainSeconds : 0,
      trainableParams,
      peakRssBytes: peakRss,
      distillSeconds,
      memory,
      finalDir,
      adapterDir,
    };
  }

  private save(state: TrainerState, values: Map<string, Float32Array>, optimizer: AdamW, shapes: Map<string, number[]>, model: TrainingModel): void {
    const dir = saveCheckpoint(this.run.output_dir, state, values, optimizer, shapes, { stages: model.plan.stages.length, train_type: this.run.train_type }, this.run.save_total_limit);
    log.info({ dir, step: state.step }, 'checkpoint committed');
  }

  /** The unexpanded base model, frozen, whose logits the student is kept close to. */
  private async teacher(model: TrainingModel): Promise<RangeProgram> {
    return frozenWholeModel(model.base.config, model.base.load, { logits: true, device: this.run.device, threads: this.run.threads });
  }

}

async function evalLoss(program: RangeProgram, examples: readonly Example[], batchSize: number, padId: number, values: ReadonlyMap<string, Float32Array>): Promise<number> {
  let loss = 0;
  let tokens = 0;
  for (const c of chunks(examples, batchSize)) {
    const out = await program.forward(makeBatch(c, { padId }), values);
    loss += Number(out.loss_sum.data[0]);
    tokens += Number(out.token_count.data[0]);
  }
  return loss / tokens;
}
