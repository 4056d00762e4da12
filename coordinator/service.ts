// What the coordinator does for its callers, without the wire: the job state machine with its
// events (metrics.jsonl, telemetry, signals, checkpoint commits, result.json) behind the six calls of
// the Coordinator service. The gRPC server wraps these calls; the single-process run calls them in
// memory, so one rank and many run the same job.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../model/hf/config.ts';
import { readExpansionSidecar } from '../model/expand/sidecar.ts';
import { childLog } from '../common/log.ts';
import type { AckMsg, AssignmentMsg, ExportReportMsg, JobStatusMsg, RegisterRequest, ShardReportMsg, StageInfoMsg, StepDecisionMsg, StepReportMsg } from '../proto/messages.ts';
import { maskToWire } from '../proto/mask.ts';
import type { ControlSignal, EarlyStopSignal, StageSignal } from '../proto/signals.ts';
import { commitCheckpoint, latestManifest, partialDir, sha256File } from '../recipe/checkpoints.ts';
import { trainedStack, type TrainedStack } from '../recipe/layout.ts';
import { blockLearningRates, stageLrFactor, warmupSteps } from '../recipe/lr-schedule.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import { describeStage } from '../recipe/stages.ts';
import type { StageEnd } from '../recipe/step-policy.ts';
import { Job, type StepRecord } from './job.ts';
import type { Telemetry } from './telemetry.ts';
import { readEvalResults } from '../recipe/eval-tasks.ts';
import type { ScheduleKind } from '../recipe/schedule-kind.ts';
import { resolveFrozenDtype } from '../plan/request.ts';

const log = childLog({ component: 'coordinator' });

/** Where stage transitions and control signals go: NATS for a pipeline, memory for one process. */
export interface SignalSink {
  stage(sig: StageSignal): void;
  earlyStop(sig: EarlyStopSignal): void;
  control(sig: ControlSignal): void;
}

export interface ServiceOptions {
  run: RunConfig;
  workers: number;
  schedule: ScheduleKind;
  microBatches: number;
  natsUrl: string;
  jobId?: string;
  ignoreMask?: boolean;
  staticPartition?: boolean;
  stepTimeoutMs?: number;
  signals: SignalSink;
  telemetry?: Telemetry | null;
  /** Sees every metrics.jsonl record as it is written (the live terminal display of a local run). */
  onRecord?: (record: Record<string, unknown>) => void;
}

/** The summary `train --json` prints and result.json holds, for one rank or many. */
export interface RunResult {
  steps: number;
  tokens: number;
  stages: StageEnd[];
  finalTrainLoss: number;
  finalValLoss: number | null;
  tokensPerSec: number;
  trainableParams: number;
  peakRssBytes: number;
  peakRssPerRank: number[];
  /** Seconds spent in distillation teacher passes, summed over ranks. */
  distillSeconds: number;
  workers: number;
  finalDir: string;
  adapterDir: string;
  /** Scores of the final model on the run's eval_tasks (worker/final-eval.ts), when it has any. */
  evals?: unknown[];
}

/** Test hook: kill -9 the coordinator at the barrier of this step (PROPIPE_TEST_COORD_CRASH_AT_STEP). */
function crashCoordinatorAt(step: number): void {
  if (process.env.PROPIPE_TEST_COORD_CRASH_AT_STEP === String(step)) process.kill(process.pid, 'SIGKILL');
}

export class CoordinatorService {
  readonly job: Job;
  readonly jobId: string;
  readonly stack: TrainedStack;
  /** Resolves when training is over and the export is written (or the job aborted). */
  readonly done: Promise<void>;
  result: RunResult | null = null;
  private stageInfo: { stage: number; effectiveStep: number };
  private readonly summary = { steps: 0, tokens: 0, seconds: 0, finalTrainLoss: NaN, finalValLoss: null as number | null, peakRssPerRank: [] as number[], trainableParams: 0, distillSeconds: 0, stages: [] as StageEnd[] };
  private readonly metricsFile: string;

  constructor(private readonly o: ServiceOptions) {
    const run = o.run;
    if (run.early_stop_patience > 0 && !run.val_dataset) throw new Error('early_stop_patience needs val_dataset (validation loss decides when a stage ends)');
    const base = loadConfig(run.model);
    const stack = (this.stack = trainedStack(run, base.config, base.raw, readExpansionSidecar(run.model)));
    this.jobId = o.jobId ?? crypto.randomBytes(4).toString('hex');
    fs.mkdirSync(run.output_dir, { recursive: true });
    this.metricsFile = path.join(run.output_dir, 'metrics.jsonl');
    // The run as the report and the progress display need it: config and the blocks of every stage.
    this.metrics({ event: 'run', config: run, layers: stack.config.numLayers, stages: stack.plan.stages.map((s) => s.layers), workers: o.workers, schedule: o.schedule, micro_batches: o.microBatches });
    const resume = run.resume ? latestManifest(run.output_dir) : null;
    if (run.resume && !resume) log.info({ outputDir: run.output_dir }, 'no committed checkpoint to resume from; starting fresh');
    if (resume) log.info({ dir: resume.dir, step: resume.manifest.step, stage: resume.manifest.state.stage }, 'resuming the job from a committed checkpoint');
    this.stageInfo = { stage: resume?.manifest.state.stage ?? 0, effectiveStep: resume?.manifest.state.step ?? 0 };
    let finish!: () => void;
    this.done = new Promise<void>((r) => (finish = r));
    const incarnation = crypto.randomBytes(6).toString('hex');
    this.job = new Job(
      { incarnation, jobId: this.jobId, run, stack, base: base.config, frozenDtype: resolveFrozenDtype(run.frozen_dtype, base.raw), workers: o.workers, schedule: o.schedule, microBatches: o.microBatches, natsUrl: o.natsUrl, hasVal: !!run.val_dataset, ignoreMask: o.ignoreMask, staticPartition: o.staticPartition, stepTimeoutMs: o.stepTimeoutMs, resume: resume ? { state: resume.manifest.state, dir: resume.dir } : null },
      {
        stage: (stage, effectiveStep, trainable) => {
          this.stageInfo = { stage, effectiveStep };
          this.stageStart(stage, 'previous stage ended', effectiveStep);
          o.signals.stage({ stage, effectiveStep, trainable, mask: stack.plan.stages[stage].mask });
        },
        stageEnd: (end) => {
          this.summary.stages.push(end);
          this.metrics({ event: 'stage_end', stage: end.stage, steps: end.steps, ended: end.ended, eval_loss: this.summary.finalValLoss });
          log.info({ stage: end.stage, steps: end.steps, ended: end.ended, best: end.bestValLoss }, `stage ${end.stage + 1} ended (${end.ended})`);
        },
        earlyStop: (stage, step, best) => {
          log.info({ stage, step, best }, `stage ${stage + 1} ended early: validation loss has not improved for ${run.early_stop_patience} evaluations`);
          this.metrics({ event: 'early_stop', step, stage, best, patience: run.early_stop_patience });
          o.signals.earlyStop({ stage, step, best });
        },
        step: (r) => this.recordStep(r),
        eval: (r) => {
          o.telemetry?.recordEval(r.loss);
          this.summary.finalValLoss = r.loss;
          log.info(r, 'eval');
          this.metrics({ step: r.step, stage: r.stage, eval_loss: r.loss, improved: r.improved });
        },
        commit: (step, state, shards, partition) => {
          const dir = partialDir(run.output_dir, step);
          const entries = shards.map((s) => {
            const file = path.join(dir, s.file);
            const bytes = fs.statSync(file).size;
            if (bytes !== s.bytes || sha256File(file) !== s.sha256) throw new Error(`shard ${s.file} of step ${step} does not match its report (size or checksum)`);
            return { file: s.file, bytes, sha256: s.sha256 };
          });
          const committed = commitCheckpoint(run.output_dir, step, state, entries, { train_type: run.train_type, stages: stack.plan.stages.length, partition }, run.save_total_limit);
          log.info({ dir: committed, step }, 'checkpoint committed');
          this.metrics({ event: 'checkpoint', step, dir: committed });
          return committed;
        },
        done: () => finish(),
        recover: (reason, epoch) => {
          o.signals.control({ command: 'reassign', reason, epoch, incarnation });
          this.metrics({ event: 'recover', reason, epoch });
          const last = latestManifest(run.output_dir);
          if (last) log.info({ dir: last.dir, step: last.manifest.step }, 'restarting from the last committed checkpoint');
          else log.info('no committed checkpoint: restarting from the beginning');
          return last ? { state: last.manifest.state, dir: last.dir } : null;
        },
      },
    );
    if (this.job.state.stageStep === 0) this.stageStart(this.job.state.stage, this.job.state.stage === 0 ? 'first stage' : 'resumed at a stage boundary', this.job.state.step);
    // Workers of a previous coordinator process may be blocked mid-step: tell them to register again.
    o.signals.control({ command: 'reassign', reason: 'the coordinator (re)started', epoch: 1, incarnation });
  }

  register(req: RegisterRequest): Promise<AssignmentMsg> {
    return this.job.register(req);
  }

  reportStep(req: StepReportMsg): Promise<StepDecisionMsg> {
    return this.job.report(req);
  }

  commitShard(req: ShardReportMsg): AckMsg {
    // The report names a file the coordinator will hash: only a shard of a known rank, no paths.
    if (!/^shard-\d{5}\.safetensors$/.test(req.file)) throw new Error(`shard file name '${req.file}' is not shard-NNNNN.safetensors`);
    if (this.job.rankOf(req.workerId) !== req.rank) throw new Error(`worker ${req.workerId} is not rank ${req.rank} of the current assignment`);
    this.job.commitShard(req);
    return { ok: true, message: '' };
  }

  status(): JobStatusMsg {
    const job = this.job;
    return { jobId: this.jobId, state: job.phase, step: job.state.step, stage: job.state.stage, workers: job.partition.length, lastLoss: job.lastLoss, lastCheckpoint: job.lastCheckpoint, epoch: job.epoch, incarnation: job.o.incarnation };
  }

  currentStage(): StageInfoMsg {
    const s = this.stack.plan.stages[this.stageInfo.stage];
    return { stage: this.stageInfo.stage, effectiveStep: this.stageInfo.effectiveStep, trainable: s.trainable, mask: maskToWire(s.mask) };
  }

  reportExport(req: ExportReportMsg): AckMsg {
    log.info({ final: req.finalDir, adapter: req.adapterDir }, 'run exported');
    const s = this.summary;
    this.result = {
      steps: s.steps,
      tokens: s.tokens,
      stages: s.stages,
      finalTrainLoss: s.finalTrainLoss,
      finalValLoss: s.finalValLoss,
      tokensPerSec: s.seconds > 0 ? s.tokens / s.seconds : 0,
      trainableParams: s.trainableParams,
      peakRssBytes: s.peakRssPerRank.reduce((a, b) => a + b, 0),
      peakRssPerRank: s.peakRssPerRank,
      distillSeconds: s.distillSeconds,
      workers: this.o.workers,
      finalDir: req.finalDir,
      adapterDir: req.adapterDir,
      // Rank 0 scored the exported model on eval_tasks before reporting the export.
      evals: this.o.run.eval_tasks.length > 0 ? readEvalResults(this.o.run.output_dir) : undefined,
    };
    fs.writeFileSync(path.join(this.o.run.output_dir, 'result.json'), JSON.stringify(this.result, null, 2) + '\n');
    this.job.finishExport();
    return { ok: true, message: '' };
  }

  private stageStart(stage: number, why: string, step: number): void {
    const s = this.stack.plan.stages[stage];
    log.info({ stage, layers: s.layers, tensors: s.trainable.length, why }, `${describeStage(this.stack.plan, s)} — starting (${why})`);
    this.metrics({ event: 'stage_start', step, stage, layers: s.layers, tensors: s.trainable.length, why });
  }

  private recordStep(r: StepRecord): void {
    const run = this.o.run;
    crashCoordinatorAt(r.step);
    this.o.telemetry?.recordStep(r);
    const s = this.summary;
    s.steps = r.step;
    s.tokens += r.tokens;
    s.seconds += r.seconds;
    s.finalTrainLoss = r.loss;
    s.trainableParams = r.reports.reduce((n, x) => n + x.trainableParams, 0);
    r.reports.forEach((x) => (s.peakRssPerRank[x.rank] = Math.max(s.peakRssPerRank[x.rank] ?? 0, x.rssBytes)));
    s.distillSeconds += r.reports.reduce((n, x) => n + teacherSeconds(x.traceJson), 0);
    const factor = stageLrFactor(r.stageStep, r.stageSteps, warmupSteps(run, r.stageSteps), run.min_lr_ratio);
    const lr = run.learning_rate * factor;
    const lrBlocks = blockLearningRates(run, this.stack.plan.stages[r.stage].layers, this.stack.config.numLayers, factor);
    const tokensPerSec = r.tokens / Math.max(r.seconds, 1e-9);
    if (r.step % run.logging_steps === 0) log.info({ step: r.step, stage: r.stage, loss: r.loss, gradNorm: r.gradNorm, lr, tokensPerSec: Math.round(tokensPerSec) }, 'train');
    this.metrics({ step: r.step, stage: r.stage, stage_step: r.stageStep + 1, stage_steps: r.stageSteps, loss: r.loss, kl: run.distill_weight > 0 ? r.kl : undefined, grad_norm: r.gradNorm, clip_scale: r.clipScale, max_grad_norm: run.max_grad_norm, lr, lr_blocks: lrBlocks, tokens: r.tokens, seconds: r.seconds, tokens_per_s: tokensPerSec, busy: r.reports.map((x) => x.busySeconds), rss: r.reports.map((x) => x.rssBytes) });
  }

  private metrics(record: Record<string, unknown>): void {
    const line = { time: new Date().toISOString(), ...record };
    fs.appendFileSync(this.metricsFile, JSON.stringify(line) + '\n');
    this.o.onRecord?.(line);
  }
}

/** Seconds a rank's step spent in distillation-teacher spans (from its timeline). */
function teacherSeconds(traceJson: string): number {
  if (!traceJson.includes('teacher')) return 0;
  return (JSON.parse(traceJson) as { name: string; start: number; end: number }[]).filter((s) => s.name.startsWith('teacher')).reduce((n, s) => n + (s.end - s.start) / 1000, 0);
}
