// One assignment of one rank, step after step: the schedule's actions for each step, the report at
// the barrier, the update with the global clip scale, evaluation, checkpoint shards, stage
// transitions, and the export at the end. The same loop runs every pipeline rank (over gRPC and
// NATS) and the single-process run (one rank, everything in memory): only the ports differ.
import path from 'node:path';
import type { childLog } from '../common/log.ts';
import type { OutFrame } from '../proto/frames.ts';
import type { AckMsg, AssignmentMsg, ExportReportMsg, JobStatusMsg, RegisterRequest, ShardReportMsg, StageInfoMsg, StepDecisionMsg, StepReportMsg } from '../proto/messages.ts';
import type { ControlSignal, StageSignal } from '../proto/signals.ts';
import { readManifest } from '../recipe/checkpoints.ts';
import { layerLearningRate, stageLrFactor, warmupSteps } from '../recipe/lr-schedule.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import { stageSteps } from '../recipe/stage-length.ts';
import { readShards, shardFile, writeShard } from './checkpoint.ts';
import { openFeed, type DataFeed } from './data-feed.ts';
import { crashInSave, crashPoint, poisonPoint, stallPoint } from './faults.ts';
import { JobAborted, PermanentError, RecoverableError } from '../common/errors.ts';
import { expectedFrames } from './frame-rule.ts';
import { watchAssignment } from './assignment-watch.ts';
import { runEval, runStep, type Links, type Span, type StepResult } from './executor.ts';
import { exportRankShards } from './export-ranks.ts';
import { trainedParts, writeRunAdapter } from './export-run.ts';
import { finalEvaluation } from './final-eval.ts';
import type { Mailbox } from './mailbox.ts';
import type { FrameExpectation } from './peer.ts';
import { holdsTensor, Rank } from './rank.ts';
import { EMBEDDING, TiedEmbedding, tiedPeer } from './tied-embedding.ts';
import { isScheduleKind } from '../recipe/schedule-kind.ts';
import type { TrainingModel } from './training-model.ts';
import { maskFromWire } from '../proto/mask.ts';
import { sameMask } from '../recipe/freeze-mask.ts';
import { peakRssBytes } from './peak-rss.ts';

type Log = ReturnType<typeof childLog>;

/** The six calls a rank makes to its coordinator: over gRPC, or in memory for one process. */
export interface CoordinatorPort {
  register(req: RegisterRequest): Promise<AssignmentMsg>;
  reportStep(req: StepReportMsg): Promise<StepDecisionMsg>;
  commitShard(req: ShardReportMsg): Promise<AckMsg>;
  status(): Promise<JobStatusMsg>;
  currentStage(epoch: number): Promise<StageInfoMsg>;
  reportExport(req: ExportReportMsg): Promise<AckMsg>;
}

/** Frames to and from the neighbouring ranks (none with one rank). */
export interface RankTransport {
  readonly mailbox: Mailbox;
  expect: FrameExpectation;
  sendDown(f: OutFrame): Promise<void>;
  /** A stream to the rank above, or null on the last rank. */
  linkUp(address: string): { sendUp(f: OutFrame): Promise<void>; close(): void } | null;
}

/** Stage signals (the freeze mask of the next stage) and control signals. */
export interface StageSource {
  waitFor(stage: number, timeoutMs: number, fallback: () => Promise<StageSignal>): Promise<{ signal: StageSignal; waitedMs: number; via: string }>;
  onControl: (sig: ControlSignal) => void;
}

export interface RankPorts {
  coord: CoordinatorPort;
  transport: RankTransport;
  stages: StageSource;
  workerId: string;
  stageTimeoutMs: number;
  log: Log;
  /** Rank 0's data, when the caller has already opened it (to refuse bad data before writing anything). */
  feed?: DataFeed;
  /** Ask the coordinator this often whether the assignment still stands (0: never; one process needs not). */
  watchMs?: number;
}

/** The update of one step on this rank: AdamW with the layer's LR and the global clip scale. */
export function applyUpdate(run: RunConfig, rank: Rank, res: StepResult, d: Pick<StepDecisionMsg, 'gradNorm' | 'clipScale' | 'stageStep' | 'stageSteps'>): boolean {
  if (!Number.isFinite(d.gradNorm)) return false;
  const factor = stageLrFactor(d.stageStep, d.stageSteps, warmupSteps(run, d.stageSteps), run.min_lr_ratio);
  for (const [n, g] of res.grads) rank.optimizer.update(n, rank.values.get(n)!, g, layerLearningRate(run, n, rank.model.config.numLayers) * factor, d.clipScale);
  return true;
}

export async function runAssignment(a: AssignmentMsg, run: RunConfig, model: TrainingModel, ports: RankPorts): Promise<'stop' | 'reassign'> {
  const { coord, transport: server, stages: watcher, workerId, log } = ports;
  if (!a.range) throw new Error(`the coordinator's assignment for rank ${a.rank} has no block range; coordinator and worker run different propipe versions: update both`);
  const rank = new Rank(run, model, a.rank, a.partition);
  log.info({ rank: a.rank, of: a.worldSize, blocks: `${a.range.start}..${a.range.end - 1}`, embed: a.range.embed, head: a.range.head, epoch: a.epoch }, 'assigned');
  if (a.resumeCheckpoint) {
    const manifest = readManifest(a.resumeCheckpoint);
    if (!manifest) throw new Error(`the checkpoint ${a.resumeCheckpoint} the coordinator resumes from does not verify`);
    const ck = readShards(a.resumeCheckpoint, manifest, (n) => holdsTensor(model.config, rank.range, n));
    for (const [n, v] of ck.params) rank.values.set(n, v);
    for (const [n, m] of ck.moments) rank.optimizer.state.set(n, m);
    log.info({ checkpoint: a.resumeCheckpoint, tensors: ck.params.size }, 'restored trainable tensors');
  }
  const feed = a.rank === 0 ? (ports.feed ?? (await openFeed(run, model))) : null;
  const schedule = a.schedule;
  if (!isScheduleKind(schedule)) throw new Error(`the coordinator asks for schedule '${schedule}', which this worker does not know; coordinator and worker run different propipe versions: update both`);
  rank.splitBackward = schedule === 'zb1';
  const trainableParams = rank.trainableParams;
  const M = a.microBatches;
  let step = a.startStep;
  let stage = a.stage;
  let evalBatches = 0;
  // Frames carry the assignment epoch: a neighbour's frames of this assignment may already be here.
  server.mailbox.reset(a.epoch);
  server.expect = expectedFrames(a.epoch, () => step, M, () => evalBatches);
  // Every frame this rank sends, on any link, carries its assignment epoch.
  const send = stampedTransport(server, a.epoch);
  const link = a.nextPeer ? send.linkUp(a.nextPeer) : null;
  const up = (f: OutFrame) => {
    if (f.kind === 'ACTIVATION' && f.tensor.dtype === 'float32') poisonPoint(f.step, f.tensor.data);
    return link!.sendUp(f);
  };
  const links: Links = { mailbox: server.mailbox, up: link ? up : undefined, down: a.rank > 0 ? send.sendDown : undefined };
  const tied = rank.tiedEmbedding ? new TiedEmbedding(a.rank === 0, rank.shapes.get(EMBEDDING)!, server.mailbox, tiedPeer({ ...a, up: links.up, transport: send })) : null;
  feed?.startStage(stage, { epoch: a.positionEpoch, index: a.positionIndex });
  // A failed rank elsewhere: drop this step at once instead of waiting on frames that will not come.
  watcher.onControl = (sig) => {
    if (sig.command === 'reassign' && (sig.incarnation !== a.incarnation || (sig.epoch ?? 0) > a.epoch)) server.mailbox.fail(new RecoverableError(`re-assigning: ${sig.reason}`));
  };
  await rank.enterStage(stage);
  // The same, should the signal be lost: the coordinator is asked over gRPC (worker/assignment-watch.ts).
  const unwatch = watchAssignment(() => coord.status(), a, ports.watchMs ?? 0, (why) => {
    log.warn({ why, epoch: a.epoch }, 'the assignment no longer stands (no control signal came): dropping the step');
    server.mailbox.fail(new RecoverableError(`re-assigning: ${why}`));
  });

  try {
    for (;;) {
      const t0 = performance.now();
      const batches = feed?.next(M);
      await stallPoint(step);
      const res = await runStep(rank, schedule, step, M, links, batches, () => crashPoint(step));
      await tied?.exchange(step, res.grads);
      const gradSq = rank.optimizer.gradSumOfSquares(tied ? tied.normed(res.grads) : res.grads.values());
      const position = batches ? batches[batches.length - 1].next : { epoch: 0, index: 0 };
      const valBatches = feed?.valBatches();
      let d: StepDecisionMsg = await coord.reportStep({
        workerId, rank: a.rank, step, epoch: a.epoch, gradSqSum: gradSq, lossSum: res.lossSum, klSum: res.klSum, tokens: res.tokens,
        busySeconds: res.busySeconds, stepSeconds: (performance.now() - t0) / 1000, traceJson: JSON.stringify(absolute(res.spans)),
        evalLossSum: 0, evalTokens: 0, stageSteps: feed ? stageSteps(run, feed.train.examples.length) : 0,
        positionEpoch: position.epoch, positionIndex: position.index, isEval: false, evalBatches: valBatches?.length ?? 0,
        rssBytes: peakRssBytes(), trainableParams,
      });
      const tOpt = performance.now();
      if (!applyUpdate(run, rank, res, d)) log.warn({ step }, 'non-finite global gradient norm: step skipped, weights unchanged');
      res.spans.push({ name: 'optimizer', start: tOpt, end: performance.now() });
      while (d.directive === 'EVALUATE') {
        evalBatches = d.evalBatches;
        const ev = await runEval(rank, step, d.evalBatches, links, valBatches);
        d = await coord.reportStep({
          workerId, rank: a.rank, step, epoch: a.epoch, gradSqSum: 0, lossSum: 0, klSum: 0, tokens: 0, busySeconds: 0, stepSeconds: 0, traceJson: '',
          evalLossSum: ev.lossSum, evalTokens: ev.tokens, stageSteps: 0, positionEpoch: 0, positionIndex: 0, isEval: true, evalBatches: 0,
          rssBytes: peakRssBytes(), trainableParams,
        });
      }
      step++;
      if (d.save) {
        const file = shardFile(run.output_dir, step, a.rank);
        crashInSave(step);
        const entry = writeShard(file, rank.values, rank.optimizer, rank.shapes);
        await coord.commitShard({ workerId, rank: a.rank, step, file: entry.file, bytes: entry.bytes, sha256: entry.sha256 });
      }
      if (d.directive === 'STOP') {
        const finalDir = await exportRankShards({ run, model, values: rank.values, lora: rank.lora, partition: rank.partition, rank: a.rank, step });
        if (finalDir) await exportFromCheckpoint(run, model, rank, coord, step, workerId, log, finalDir);
        return 'stop';
      }
      if (d.directive === 'REASSIGN') return 'reassign';
      if (d.directive === 'ABORT') throw new JobAborted(`the coordinator aborted the job at step ${step}: repeated non-finite losses or gradients (see its log)`);
      if (d.stage !== stage) {
        const w = await watcher.waitFor(d.stage, ports.stageTimeoutMs, async () => {
          const info = await coord.currentStage(a.epoch);
          return { stage: info.stage, effectiveStep: info.effectiveStep, trainable: info.trainable, mask: maskFromWire(info.mask) };
        });
        const expected = model.plan.stages[d.stage];
        if (!sameMask(w.signal.mask, expected.mask) || w.signal.trainable.length !== expected.trainable.length || w.signal.trainable.some((n, i) => n !== expected.trainable[i])) throw new PermanentError(`stage ${d.stage}: the signalled freeze mask differs from this worker's stage plan: the coordinator and this worker see a different model or run config`);
        if (w.signal.effectiveStep !== step) throw new Error(`stage ${d.stage} takes effect after step ${w.signal.effectiveStep}, this rank is at ${step}`);
        log.info({ stage: d.stage, step, via: w.via, waitedMs: Math.round(w.waitedMs) }, 'entering stage');
        stage = d.stage;
        feed?.startStage(stage, { epoch: 0, index: 0 });
        await rank.enterStage(stage);
      }
    }
  } finally {
    unwatch();
    link?.close();
    tied?.close();
    await rank.release();
  }
}

/** The transport's sending side, with `epoch` stamped on every frame (the receiver takes only its own). */
function stampedTransport(t: RankTransport, epoch: number): Pick<RankTransport, 'sendDown' | 'linkUp'> {
  return {
    sendDown: (f) => t.sendDown({ ...f, epoch }),
    linkUp: (address) => {
      const l = t.linkUp(address);
      return l && { sendUp: (f: OutFrame) => l.sendUp({ ...f, epoch }), close: () => l.close() };
    },
  };
}

/** Spans in absolute milliseconds, so every rank's timeline lines up in one trace. */
function absolute(spans: Span[]): Span[] {
  return spans.map((s) => ({ name: s.name, start: performance.timeOrigin + s.start, end: performance.timeOrigin + s.end }));
}

/** Rank 0 writes adapter/ from the last committed checkpoint, which holds every rank's shard (every rank wrote its shards of final/). */
async function exportFromCheckpoint(run: RunConfig, model: TrainingModel, rank: Rank, coord: CoordinatorPort, step: number, workerId: string, log: ReturnType<typeof childLog>, finalDir: string): Promise<void> {
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
  const adapterDir = writeRunAdapter(run, model, trainedParts(model, values, rank.lora));
  await finalEvaluation(run, finalDir);
  await coord.reportExport({ workerId, finalDir, adapterDir });
  log.info({ finalDir, adapterDir }, 'export reported');
}
