// The coordinator process: reads config.json (never weights), plans, and serves the Coordinator gRPC
// service around the job state machine; signals go out on NATS, metrics over HTTP, the timeline to
// output_dir/trace.json.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadConfig } from '../model/config.ts';
import { readExpansionSidecar } from '../model/expand-sidecar.ts';
import { childLog } from '../model/log.ts';
import { CHANNEL_OPTIONS, loadProto } from '../proto/load.ts';
import { checkToken, serverCredentials, type Security } from '../proto/security.ts';
import type { ExportReportMsg, RegisterRequest, ShardReportMsg, StepReportMsg } from '../proto/messages.ts';
import { commitCheckpoint, latestManifest, partialDir, sha256File } from '../recipe/checkpoints.ts';
import { trainedStack } from '../recipe/layout.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import { Job } from './job.ts';
import { connectNats, SignalPublisher } from '../proto/signals.ts';
import { Telemetry } from './telemetry.ts';

const log = childLog({ component: 'coordinator' });

export interface CoordinatorOptions {
  run: RunConfig;
  workers: number;
  schedule: 'gpipe' | '1f1b';
  microBatches: number;
  host: string;
  port: number;
  natsUrl: string;
  metricsPort?: number;
  jobId?: string;
  ignoreMask?: boolean;
  staticPartition?: boolean;
  stepTimeoutMs?: number;
  security?: Security;
}

export interface RunningCoordinator {
  address: string;
  metricsPort: number | null;
  job: Job;
  /** Resolves when training is over and the export is written. */
  done: Promise<void>;
  close(): Promise<void>;
}

/** Test hook: kill -9 the coordinator at the barrier of this step (PROPIPE_TEST_COORD_CRASH_AT_STEP). */
function crashCoordinatorAt(step: number): void {
  if (process.env.PROPIPE_TEST_COORD_CRASH_AT_STEP === String(step)) process.kill(process.pid, 'SIGKILL');
}

type Handler<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

function unary<Req, Res>(sec: Security, fn: (req: Req) => Promise<Res> | Res): Handler<Req, Res> {
  return (call, cb) => {
    const denied = checkToken(sec, call.metadata);
    if (denied) return cb(denied);
    Promise.resolve()
      .then(() => fn(call.request))
      .then((res) => cb(null, res))
      .catch((err: Error) => cb({ code: grpc.status.FAILED_PRECONDITION, details: err.message } as grpc.ServiceError));
  };
}

export async function startCoordinator(o: CoordinatorOptions): Promise<RunningCoordinator> {
  const run = o.run;
  const base = loadConfig(run.model);
  const stack = trainedStack(run, base.config, base.raw, readExpansionSidecar(run.model));
  const jobId = o.jobId ?? crypto.randomBytes(4).toString('hex');
  const resume = run.resume ? latestManifest(run.output_dir) : null;
  if (resume) log.info({ dir: resume.dir, step: resume.manifest.step, stage: resume.manifest.state.stage }, 'resuming the job from a committed checkpoint');
  const nc = await connectNats(o.natsUrl, `coordinator-${jobId}`);
  const signals = new SignalPublisher(nc, jobId);
  const telemetry = new Telemetry(run.output_dir, run.resume);
  const metricsPort = o.metricsPort !== undefined ? await telemetry.serve(o.metricsPort) : null;
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  const summary = { steps: 0, tokens: 0, seconds: 0, finalTrainLoss: NaN, finalValLoss: null as number | null, peakRssPerRank: [] as number[], trainableParams: 0 };
  let stageInfo = { stage: resume?.manifest.state.stage ?? 0, effectiveStep: resume?.manifest.state.step ?? 0 };

  const incarnation = crypto.randomBytes(6).toString('hex');
  const job = new Job(
    { incarnation, jobId, run, stack, workers: o.workers, schedule: o.schedule, microBatches: o.microBatches, natsUrl: o.natsUrl, hasVal: !!run.val_dataset, ignoreMask: o.ignoreMask, staticPartition: o.staticPartition, stepTimeoutMs: o.stepTimeoutMs, resume: resume ? { state: resume.manifest.state, dir: resume.dir } : null },
    {
      stage: (stage, effectiveStep, trainable) => {
        stageInfo = { stage, effectiveStep };
        log.info({ stage, effectiveStep, tensors: trainable.length }, `stage ${stage + 1}/${stack.stages.stages.length} begins after step ${effectiveStep}`);
        signals.stage({ stage, effectiveStep, trainable });
      },
      earlyStop: (stage, step, best) => {
        log.info({ stage, step, best }, `stage ${stage + 1} ended early: validation loss has not improved for ${run.early_stop_patience} evaluations`);
        signals.earlyStop({ stage, step, best });
      },
      step: (r) => {
        crashCoordinatorAt(r.step);
        telemetry.recordStep(r);
        summary.steps = r.step;
        summary.tokens += r.tokens;
        summary.seconds += r.seconds;
        summary.finalTrainLoss = r.loss;
        summary.trainableParams = r.reports.reduce((n, x) => n + x.trainableParams, 0);
        r.reports.forEach((x) => (summary.peakRssPerRank[x.rank] = Math.max(summary.peakRssPerRank[x.rank] ?? 0, x.rssBytes)));
        if (r.step % run.logging_steps === 0) log.info({ step: r.step, stage: r.stage, loss: r.loss, gradNorm: r.gradNorm, tokensPerSec: Math.round(r.tokens / Math.max(r.seconds, 1e-9)) }, 'train');
        fs.appendFileSync(path.join(run.output_dir, 'metrics.jsonl'), JSON.stringify({ time: new Date().toISOString(), step: r.step, stage: r.stage, loss: r.loss, grad_norm: r.gradNorm, tokens: r.tokens, seconds: r.seconds, busy: r.reports.map((x) => x.busySeconds) }) + '\n');
      },
      eval: (r) => {
        telemetry.recordEval(r.loss);
        summary.finalValLoss = r.loss;
        log.info(r, 'eval');
        fs.appendFileSync(path.join(run.output_dir, 'metrics.jsonl'), JSON.stringify({ time: new Date().toISOString(), step: r.step, stage: r.stage, eval_loss: r.loss, improved: r.improved }) + '\n');
      },
      commit: (step, state, shards, partition) => {
        const dir = partialDir(run.output_dir, step);
        const entries = shards.map((s) => {
          const file = path.join(dir, s.file);
          const bytes = fs.statSync(file).size;
          if (bytes !== s.bytes || sha256File(file) !== s.sha256) throw new Error(`shard ${s.file} of step ${step} does not match its report (size or checksum)`);
          return { file: s.file, bytes, sha256: s.sha256 };
        });
        const committed = commitCheckpoint(run.output_dir, step, state, entries, { train_type: run.train_type, stages: stack.stages.stages.length, partition }, run.save_total_limit);
        log.info({ dir: committed, step }, 'checkpoint committed');
        return committed;
      },
      done: () => finish(),
      recover: (reason, epoch) => {
        signals.control({ command: 'reassign', reason, epoch, incarnation });
        fs.appendFileSync(path.join(run.output_dir, 'metrics.jsonl'), JSON.stringify({ time: new Date().toISOString(), event: 'recover', reason, epoch }) + '\n');
        const last = latestManifest(run.output_dir);
        if (last) log.info({ dir: last.dir, step: last.manifest.step }, 'restarting from the last committed checkpoint');
        else log.info('no committed checkpoint: restarting from the beginning');
        return last ? { state: last.manifest.state, dir: last.dir } : null;
      },
    },
  );

  const sec = o.security ?? {};
  const { Coordinator } = loadProto();
  const server = new grpc.Server(CHANNEL_OPTIONS);
  server.addService(Coordinator.service, {
    Register: unary(sec, (req: RegisterRequest) => job.register(req)),
    ReportStep: unary(sec, (req: StepReportMsg) => job.report(req)),
    CommitShard: unary(sec, (req: ShardReportMsg) => {
      // The report names a file the coordinator will hash: only a shard of a known rank, no paths.
      if (!/^shard-\d{5}\.safetensors$/.test(req.file)) throw new Error(`shard file name '${req.file}' is not shard-NNNNN.safetensors`);
      if (job.rankOf(req.workerId) !== req.rank) throw new Error(`worker ${req.workerId} is not rank ${req.rank} of the current assignment`);
      job.commitShard(req);
      return { ok: true, message: '' };
    }),
    Status: unary(sec, () => ({ jobId, state: job.phase, step: job.state.step, stage: job.state.stage, workers: job.partition.length, lastLoss: job.lastLoss, lastCheckpoint: job.lastCheckpoint })),
    CurrentStage: unary(sec, () => ({ stage: stageInfo.stage, effectiveStep: stageInfo.effectiveStep, trainable: stack.stages.stages[stageInfo.stage].trainable })),
    ReportExport: unary(sec, (req: ExportReportMsg) => {
      log.info({ final: req.finalDir, adapter: req.adapterDir }, 'run exported');
      // The same summary `propipe train --json` prints, for scripts that drive pipelined runs.
      const result = {
        steps: summary.steps,
        tokens: summary.tokens,
        finalTrainLoss: summary.finalTrainLoss,
        finalValLoss: summary.finalValLoss,
        tokensPerSec: summary.seconds > 0 ? summary.tokens / summary.seconds : 0,
        trainableParams: summary.trainableParams,
        peakRssBytes: summary.peakRssPerRank.reduce((a, b) => a + b, 0),
        peakRssPerRank: summary.peakRssPerRank,
        workers: o.workers,
        finalDir: req.finalDir,
        adapterDir: req.adapterDir,
      };
      fs.writeFileSync(path.join(run.output_dir, 'result.json'), JSON.stringify(result, null, 2) + '\n');
      job.finishExport();
      return { ok: true, message: '' };
    }),
  });
  // Workers of a previous coordinator process may be blocked mid-step: tell them to register again.
  signals.control({ command: 'reassign', reason: 'the coordinator (re)started', epoch: 1, incarnation });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`${o.host}:${o.port}`, serverCredentials(sec), (err, p) => (err ? reject(err) : resolve(p))));
  const address = `${o.host}:${port}`;
  log.info({ address, jobId, tls: !!sec.tls, token: !!sec.token, workers: o.workers, schedule: o.schedule, microBatches: o.microBatches, stages: stack.stages.stages.length, layers: stack.config.numLayers, metricsPort }, 'coordinator listening');
  return {
    address,
    metricsPort,
    job,
    done,
    close: async () => {
      // Let in-flight answers (the export acknowledgement) reach their workers before closing.
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      await telemetry.close();
      await signals.close().catch(() => undefined);
    },
  };
}
