// A worker process: registers with the coordinator, builds its block range under the current mask,
// runs the pipeline schedule step after step, applies the optimizer with the global clip scale, and
// follows the coordinator's directives (evaluate, checkpoint, stage transition, re-assign, stop).
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sumOfSquares } from '../model/adamw.ts';
import { childLog } from '../model/log.ts';
import { optionalTokenizer } from '../model/pretrained.ts';
import { deriveSeed } from '../model/rng.ts';
import type { OutFrame } from '../proto/frames.ts';
import type { AssignmentMsg, StepDecisionMsg } from '../proto/messages.ts';
import { callMetadata, channelCredentials, checkToken, serverCredentials, type Security } from '../proto/security.ts';
import { closeNats, connectNats } from '../proto/signals.ts';
import { makeBatch, shuffledBatches, type PositionedBatch } from '../recipe/batch.ts';
import { readManifest } from '../recipe/checkpoints.ts';
import { readJsonl, type Dataset } from '../recipe/data.ts';
import { chunks } from '../recipe/examples.ts';
import { layerLearningRate, stageLrFactor, warmupSteps } from '../recipe/lr-schedule.ts';
import { parseRunConfig, type RunConfig } from '../recipe/run-config.ts';
import { stageSteps } from '../recipe/stage-length.ts';
import { readShards, shardFile, writeShard } from './checkpoint.ts';
import { CoordinatorClient } from './coordinator-client.ts';
import { crashInSave, crashPoint, isRecoverable, JobAborted, poisonPoint, RecoverableError, stallPoint } from './faults.ts';
import { runEval, runStep, type Links, type MicroBatch, type Span } from './executor.ts';
import { exportRun } from './export-run.ts';
import { PeerLink, PeerServer } from './peer.ts';
import { ownsTensor, Rank } from './rank.ts';
import type { ScheduleKind } from './schedule.ts';
import { StageWatcher } from './stage-watcher.ts';
import { prepareModel, type TrainingModel } from './training-model.ts';

const MAX_FAILURES = 30;

async function backoff(failures: number, log: ReturnType<typeof childLog>, err: unknown): Promise<void> {
  const ms = Math.min(3000, 100 * 2 ** Math.min(failures, 5));
  log.warn({ err: (err as Error).message, retryInMs: ms, failures }, 'lost the assignment; registering again');
  await new Promise((r) => setTimeout(r, ms));
}

export interface WorkerOptions {
  coordinator: string;
  host: string;
  port: number;
  device: 'cpu' | 'cuda';
  memoryBytes?: number;
  workerId?: string;
  /** How long to wait for a stage signal on NATS before asking the coordinator. */
  stageTimeoutMs?: number;
  /** Test hook: hold back every NATS stage delivery by this much. */
  natsDelayMs?: number;
  security?: Security;
}

/** Rank 0 owns the data: the training stream of the current stage and the validation batches. */
class DataFeed {
  private stream: Generator<PositionedBatch> | null = null;
  constructor(readonly run: RunConfig, readonly train: Dataset, readonly val: Dataset | null, readonly padId: number) {}

  startStage(stage: number, position: { epoch: number; index: number }): void {
    this.stream = shuffledBatches(this.train.examples, { batchSize: this.run.per_device_train_batch_size, seed: deriveSeed(this.run.seed, stage), start: position, dropLast: false, padId: this.padId });
  }

  next(count: number): PositionedBatch[] {
    return Array.from({ length: count }, () => this.stream!.next().value as PositionedBatch);
  }

  valBatches(): MicroBatch[] {
    return this.val ? [...chunks(this.val.examples, this.run.per_device_eval_batch_size)].map((c) => makeBatch(c, { padId: this.padId })) : [];
  }
}

async function openFeed(run: RunConfig, model: TrainingModel): Promise<DataFeed> {
  const tokenizer = await optionalTokenizer(run.model);
  const opts = { tokenizer, vocabSize: model.config.vocabSize, maxLength: run.max_length };
  const train = await readJsonl(run.dataset, opts);
  const val = run.val_dataset ? await readJsonl(run.val_dataset, opts) : null;
  return new DataFeed(run, train, val, tokenizer?.padId ?? model.config.padTokenId ?? 0);
}

export async function runWorker(o: WorkerOptions): Promise<void> {
  const workerId = o.workerId ?? `${os.hostname()}-${process.pid}-${crypto.randomBytes(2).toString('hex')}`;
  const log = childLog({ component: 'worker', worker: workerId });
  const sec = o.security ?? {};
  const server = new PeerServer(serverCredentials(sec), (md) => checkToken(sec, md));
  const peerAddress = await server.start(o.host, o.port);
  const coord = new CoordinatorClient(o.coordinator, channelCredentials(sec), callMetadata(sec));
  let model: TrainingModel | null = null;
  let watcher: StageWatcher | null = null;
  let nats: Awaited<ReturnType<typeof connectNats>> | null = null;
  let failures = 0;
  try {
    for (;;) {
      let a: AssignmentMsg;
      try {
        log.info({ coordinator: o.coordinator, peer: peerAddress }, 'registering');
        a = await coord.register({ workerId, peerAddress, device: o.device, memoryBytes: o.memoryBytes ?? Math.floor(os.totalmem() * 0.8) });
      } catch (err) {
        // The coordinator is restarting or unreachable: keep trying with backoff, as a pod would.
        if (!isRecoverable(err) || ++failures > MAX_FAILURES) throw err;
        await backoff(failures, log, err);
        continue;
      }
      const run = parseRunConfig(JSON.parse(a.runConfigJson), 'the coordinator’s run config');
      model ??= prepareModel(run);
      nats ??= await connectNats(a.natsUrl, workerId);
      watcher ??= new StageWatcher(nats, a.jobId, o.natsDelayMs ?? 0);
      try {
        const outcome = await runAssignment(a, run, model, server, coord, watcher, workerId, o, log);
        if (outcome === 'stop') return;
        failures = 0;
      } catch (err) {
        if (!isRecoverable(err) || ++failures > MAX_FAILURES) throw err;
        await backoff(failures, log, err);
      }
    }
  } finally {
    watcher?.close();
    if (nats) await closeNats(nats);
    coord.close();
    await server.stop();
  }
}

async function runAssignment(
  a: AssignmentMsg,
  run: RunConfig,
  model: TrainingModel,
  server: PeerServer,
  coord: CoordinatorClient,
  watcher: StageWatcher,
  workerId: string,
  o: WorkerOptions,
  log: ReturnType<typeof childLog>,
): Promise<'stop' | 'reassign'> {
  const rank = new Rank(run, model, a.rank, a.partition);
  log.info({ rank: a.rank, of: a.worldSize, blocks: `${a.range.start}..${a.range.end - 1}`, embed: a.range.embed, head: a.range.head, epoch: a.epoch }, 'assigned');
  if (a.resumeCheckpoint) {
    const manifest = readManifest(a.resumeCheckpoint);
    if (!manifest) throw new Error(`the checkpoint ${a.resumeCheckpoint} the coordinator resumes from does not verify`);
    const ck = readShards(a.resumeCheckpoint, manifest, (n) => ownsTensor(rank.range, n));
    for (const [n, v] of ck.params) rank.values.set(n, v);
    for (const [n, m] of ck.moments) rank.optimizer.state.set(n, m);
    log.info({ checkpoint: a.resumeCheckpoint, tensors: ck.params.size }, 'restored trainable tensors');
  }
  const feed = a.rank === 0 ? await openFeed(run, model) : null;
  const schedule = a.schedule as ScheduleKind;
  const trainableParams = [...rank.values.values()].reduce((n, v) => n + v.length, 0);
  const M = a.microBatches;
  let step = a.startStep;
  let stage = a.stage;
  let evalBatches = 0;
  server.mailbox.reset();
  server.resetBelow();
  server.expect = (kind, s, mb) => (s < step || s > step + 1 ? `frame for step ${s} while this rank is at step ${step}` : mb >= Math.max(M, evalBatches, 1) && kind !== 'EVAL_ACTIVATION' ? `micro-batch ${mb} out of range (${M} per step)` : null);
  const sec = o.security ?? {};
  const link = a.nextPeer ? new PeerLink(a.nextPeer, server.mailbox, server.expect, channelCredentials(sec), callMetadata(sec)) : null;
  const up = (f: OutFrame) => {
    if (f.kind === 'ACTIVATION' && f.tensor.dtype === 'float32') poisonPoint(f.step, f.tensor.data);
    return link!.sendUp(f);
  };
  const links: Links = { mailbox: server.mailbox, up: link ? up : undefined, down: a.rank > 0 ? (f) => server.sendDown(f) : undefined };
  feed?.startStage(stage, { epoch: a.positionEpoch, index: a.positionIndex });
  // A failed rank elsewhere: drop this step at once instead of waiting on frames that will not come.
  watcher.onControl = (sig) => {
    if (sig.command === 'reassign' && (sig.incarnation !== a.incarnation || (sig.epoch ?? 0) > a.epoch)) server.mailbox.fail(new RecoverableError(`re-assigning: ${sig.reason}`));
  };
  await rank.enterStage(stage);

  try {
    for (;;) {
      const t0 = performance.now();
      const batches = feed?.next(M);
      await stallPoint(step);
      const res = await runStep(rank, schedule, step, M, links, batches, () => crashPoint(step));
      const gradSq = sumOfSquares(res.grads.values());
      const position = batches ? batches[batches.length - 1].next : { epoch: 0, index: 0 };
      const valBatches = feed?.valBatches();
      let d: StepDecisionMsg = await coord.reportStep({
        workerId, rank: a.rank, step, epoch: a.epoch, gradSqSum: gradSq, lossSum: res.lossSum, klSum: res.klSum, tokens: res.tokens,
        busySeconds: res.busySeconds, stepSeconds: (performance.now() - t0) / 1000, traceJson: JSON.stringify(absolute(res.spans)),
        evalLossSum: 0, evalTokens: 0, stageSteps: feed ? stageSteps(run, feed.train.examples.length) : 0,
        positionEpoch: position.epoch, positionIndex: position.index, isEval: false, evalBatches: valBatches?.length ?? 0,
        rssBytes: process.memoryUsage().rss, trainableParams,
      });
      const tOpt = performance.now();
      if (Number.isFinite(d.gradNorm)) {
        const factor = stageLrFactor(d.stageStep, d.stageSteps, warmupSteps(run, d.stageSteps), run.min_lr_ratio);
        for (const [n, g] of res.grads) rank.optimizer.update(n, rank.values.get(n)!, g, layerLearningRate(run, n, model.config.numLayers) * factor, d.clipScale);
      } else log.warn({ step }, 'non-finite global gradient norm: step skipped, weights unchanged');
      res.spans.push({ name: 'optimizer', start: tOpt, end: performance.now() });
      while (d.directive === 'EVALUATE') {
        evalBatches = d.evalBatches;
        const ev = await runEval(rank, step, d.evalBatches, links, valBatches);
        d = await coord.reportStep({
          workerId, rank: a.rank, step, epoch: a.epoch, gradSqSum: 0, lossSum: 0, klSum: 0, tokens: 0, busySeconds: 0, stepSeconds: 0, traceJson: '',
          evalLossSum: ev.lossSum, evalTokens: ev.tokens, stageSteps: 0, positionEpoch: 0, positionIndex: 0, isEval: true, evalBatches: 0,
          rssBytes: process.memoryUsage().rss, trainableParams,
        });
      }
      step++;
      if (d.save) {
        const file = shardFile(run.output_dir, step, a.rank);
        crashInSave(step, () => {
          fs.mkdirSync(path.dirname(file), { recursive: true });
          fs.writeFileSync(`${file}.tmp-torn`, Buffer.alloc(1024));
        });
        const entry = writeShard(file, rank.values, rank.optimizer, rank.shapes);
        await coord.commitShard({ workerId, rank: a.rank, step, file: entry.file, bytes: entry.bytes, sha256: entry.sha256 });
      }
      if (d.directive === 'STOP') {
        if (a.rank === 0) await exportFromCheckpoint(run, model, rank, coord, step, workerId, log);
        return 'stop';
      }
      if (d.directive === 'REASSIGN') return 'reassign';
      if (d.directive === 'ABORT') throw new JobAborted(`the coordinator aborted the job at step ${step}: repeated non-finite losses or gradients (see its log)`);
      if (d.stage !== stage) {
        const w = await watcher.waitFor(d.stage, o.stageTimeoutMs ?? 5000, async () => {
          const info = await coord.currentStage(a.epoch);
          return { stage: info.stage, effectiveStep: info.effectiveStep, trainable: info.trainable };
        });
        const expected = model.plan.stages[d.stage].trainable;
        if (w.signal.trainable.length !== expected.length || w.signal.trainable.some((n, i) => n !== expected[i])) throw new Error(`stage ${d.stage}: the signalled freeze mask differs from this worker's stage plan (different run config?)`);
        if (w.signal.effectiveStep !== step) throw new Error(`stage ${d.stage} takes effect after step ${w.signal.effectiveStep}, this rank is at ${step}`);
        log.info({ stage: d.stage, step, via: w.via, waitedMs: Math.round(w.waitedMs) }, 'entering stage');
        stage = d.stage;
        feed?.startStage(stage, { epoch: 0, index: 0 });
        await rank.enterStage(stage);
      }
    }
  } finally {
    link?.close();
    await rank.release();
  }
}

/** Spans in absolute milliseconds, so every rank's timeline lines up in one trace. */
function absolute(spans: Span[]): Span[] {
  return spans.map((s) => ({ name: s.name, start: performance.timeOrigin + s.start, end: performance.timeOrigin + s.end }));
}

/** Rank 0 writes final/ and adapter/ from the last committed checkpoint, which holds every rank's shard. */
async function exportFromCheckpoint(run: RunConfig, model: TrainingModel, rank: Rank, coord: CoordinatorClient, step: number, workerId: string, log: ReturnType<typeof childLog>): Promise<void> {
  const dir = path.join(run.output_dir, `checkpoint-${step}`);
  for (let i = 0; ; i++) {
    const s = await coord.status();
    if (s.lastCheckpoint === path.resolve(dir) || s.lastCheckpoint === dir) break;
    if (i > 600) throw new Error(`the final checkpoint ${dir} was not committed`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const manifest = readManifest(dir);
  if (!manifest) throw new Error(`the final checkpoint ${dir} does not verify`);
  const values = readShards(dir, manifest).params;
  const { finalDir, adapterDir } = exportRun(run, model, values, rank.lora);
  await coord.reportExport({ workerId, finalDir, adapterDir });
  log.info({ finalDir, adapterDir }, 'export reported');
}
