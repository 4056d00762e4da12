// The job state machine: registration, the per-step barrier (global gradient norm, clip scale),
// evaluation and early stopping, stage transitions, checkpoint commits and the end of training.
// Pure logic over messages: the gRPC service and NATS signals are wired around it.
import { childLog } from '../common/log.ts';
import type { AssignmentMsg, RegisterRequest, ShardReportMsg, StepDecisionMsg, StepReportMsg } from '../proto/messages.ts';
import type { TrainerState } from '../recipe/checkpoints.ts';
import { freshState, StepPolicy, type StageEnd, type StepDecision } from '../recipe/step-policy.ts';
import type { TrainedStack } from '../recipe/layout.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import type { ModelConfig } from '../model/hf/config.ts';
import { paramSpecs } from '../model/llama/param-specs.ts';
import { CPU_DEFAULT, workerDevice, type DeviceProfile } from '../plan/devices.ts';
import { stageShape } from '../plan/estimate.ts';
import { PartitionError, planPartition, type PartitionRequest, type RankPlan } from '../plan/partition.ts';
import { memoryRefusal } from './refusal.ts';
import { requestFromStack } from '../plan/request.ts';
import type { FrozenDtype } from '../plan/runtime.ts';
import { StageModel } from '../plan/stage-model.ts';
import type { ScheduleKind } from '../recipe/schedule-kind.ts';
import { JobAborted, JobFinished, PermanentError } from '../common/errors.ts';

const log = childLog({ component: 'job' });

export type JobState = TrainerState;

export interface JobEvents {
  /** A stage transition every rank applies after `effectiveStep`. */
  stage(stage: number, effectiveStep: number, trainable: string[]): void;
  earlyStop(stage: number, step: number, best: number | null): void;
  step(record: StepRecord): void;
  stageEnd(end: StageEnd): void;
  eval(record: { step: number; stage: number; loss: number; improved: boolean | null }): void;
  /** Every shard of `step` is in: write the manifest and commit. */
  commit(step: number, state: JobState, shards: ShardReportMsg[], partition: RankPlan[]): string;
  done(): void;
  /**
   * A rank failed (died, stalled, lost its link): every rank must register again. Returns the last
   * committed checkpoint to restart from, or null to restart from the beginning.
   */
  recover(reason: string, epoch: number): { state: JobState; dir: string } | null;
}

export interface StepRecord {
  step: number;
  stage: number;
  loss: number;
  kl: number;
  gradNorm: number;
  clipScale: number;
  stageStep: number;
  stageSteps: number;
  tokens: number;
  seconds: number;
  reports: readonly StepReportMsg[];
}

interface Worker {
  req: RegisterRequest;
  resolve: (a: AssignmentMsg) => void;
  reject: (e: Error) => void;
}

interface PendingStep {
  reports: Map<number, StepReportMsg>;
  waiters: { resolve: (d: StepDecisionMsg) => void; reject: (e: Error) => void }[];
  timer?: NodeJS.Timeout;
}

export interface JobOptions {
  jobId: string;
  run: RunConfig;
  stack: TrainedStack;
  workers: number;
  schedule: ScheduleKind;
  microBatches: number;
  natsUrl: string;
  hasVal: boolean;
  /** Frozen weights as the workers hold them (run.frozen_dtype resolved against the checkpoint); fp32 when absent. */
  frozenDtype?: FrozenDtype;
  /** The unexpanded base model (the distillation teacher's size); the trained stack's config when absent. */
  base?: ModelConfig;
  /** Partition by cost model that ignores the freeze mask (for comparison runs). */
  ignoreMask?: boolean;
  /** Keep the first partition for the whole run instead of re-planning at stage transitions. */
  staticPartition?: boolean;
  /** A barrier that not every rank reaches within this time fails the job over (0 = wait forever). */
  stepTimeoutMs?: number;
  /** Consecutive steps with a non-finite loss or gradient norm (each skipped) before the job stops. */
  maxBadSteps?: number;
  resume?: { state: JobState; dir: string } | null;
  /** Identifies this coordinator process in assignments and control signals. */
  incarnation: string;
}

export class Job {
  readonly policy: StepPolicy;
  phase: 'waiting' | 'running' | 'done' = 'waiting';
  partition: RankPlan[] = [];
  lastLoss = NaN;
  lastCheckpoint = '';
  epoch = 0;
  private waiting: Worker[] = [];
  private ranks: string[] = [];
  private pending: PendingStep = { reports: new Map(), waiters: [] };
  private evalBatches = 0;
  private readonly shards = new Map<number, ShardReportMsg[]>();
  private pendingCommit: { step: number; state: JobState } | null = null;
  private stepStarted = Date.now();
  private resumeDir: string;
  private capacities: { device: string; memoryBytes: number }[] = [];
  /** Why the job was aborted, when it was. */
  abortReason: string | null = null;
  /** A request that can never succeed ended the job (more workers than blocks, a partition that does not fit). */
  failure: PermanentError | null = null;

  constructor(readonly o: JobOptions, private readonly events: JobEvents) {
    this.policy = new StepPolicy(o.run, o.stack.plan.stages.length, o.hasVal, o.resume?.state ?? freshState());
    this.resumeDir = o.resume?.dir ?? '';
    // What no worker's memory can change (more workers than blocks) is refused before any registers.
    this.capacities = Array.from({ length: o.workers }, () => ({ device: 'cpu', memoryBytes: Infinity }));
    this.plan(this.state.stage, o.workers);
  }

  /** Where the job stands (the policy's state: what a checkpoint records). */
  get state(): JobState {
    return this.policy.state;
  }

  get stages(): number {
    return this.o.stack.plan.stages.length;
  }

  /** Resolves with this worker's assignment once the expected number of workers has registered. */
  register(req: RegisterRequest): Promise<AssignmentMsg> {
    // A job that ended for good answers every late registration with why, so the worker stops too.
    if (this.failure) return Promise.reject(this.failure);
    if (this.abortReason) return Promise.reject(new JobAborted(`the job was aborted: ${this.abortReason}`));
    if (this.phase === 'done') return Promise.reject(new JobFinished(`job ${this.o.jobId} has finished at step ${this.state.step}: nothing left to do`));
    if (!['', 'cpu', 'cuda'].includes(req.device)) return Promise.reject(new PermanentError(`worker ${req.workerId} reports device '${req.device}': start it with --device cpu or --device cuda`));
    // A worker registering while the job runs has restarted or lost its assignment: fail over.
    if (this.phase === 'running') this.fail(`worker ${req.workerId} registered again`);
    // Ranks register after sending their shard of the checkpoint being committed: one that comes
    // without it has restarted, and that checkpoint can never complete.
    else if (this.pendingCommit && !this.shards.get(this.pendingCommit.step)?.some((s) => s.workerId === req.workerId)) this.fail(`worker ${req.workerId} registered again without its shard of checkpoint ${this.pendingCommit.step}`);
    return new Promise((resolve, reject) => {
      this.waiting = this.waiting.filter((w) => w.req.workerId !== req.workerId);
      this.waiting.push({ req, resolve, reject });
      log.info({ worker: req.workerId, peer: req.peerAddress, registered: this.waiting.length, expected: this.o.workers }, 'worker registered');
      this.maybeAssign();
    });
  }

  /** Assigns once every worker is here and no checkpoint the assignment must resume from is pending. */
  private maybeAssign(): void {
    if (this.waiting.length === this.o.workers && !this.pendingCommit) this.assign();
  }

  private plan(stage: number, workers = this.waiting.length): RankPlan[] {
    let plan: RankPlan[];
    try {
      plan = planPartition(this.partitionRequest(stage, workers));
    } catch (err) {
      // More workers than blocks: no partition now means none ever.
      if (err instanceof PartitionError) throw new PermanentError(err.message);
      throw err;
    }
    if (!plan.length) throw new PermanentError(memoryRefusal(this.partitionRequest(stage, workers), stage, this.stages, this.waiting.map((w) => w.req.workerId), this.o.stack.config.numLayers));
    return plan;
  }

  /** The stage's cost and memory model (plan/), priced for the registered workers' memory. */
  private partitionRequest(stage: number, workers: number): PartitionRequest {
    const { run, stack } = this.o;
    const req = requestFromStack(run, stack, this.o.base ?? stack.config, { device: CPU_DEFAULT as DeviceProfile, workers, microBatches: this.o.microBatches, schedule: this.o.schedule, frozenDtype: this.o.frozenDtype ?? 'fp32' });
    const shape = stageShape(req, stage);
    const model = new StageModel(shape);
    // The mask-blind baseline prices every block as trainable; memory still follows the real mask.
    const all = paramSpecs(stack.config).map((p) => p.name);
    const costModel = this.o.ignoreMask ? new StageModel({ ...shape, trainable: all, trainedSoFar: all, everTrainable: all }) : undefined;
    // Each worker is priced on its own device's memory model (a CUDA worker's limit is device memory).
    return { model, costModel, workers: this.capacities.slice(0, workers).map((c) => workerDevice(c.device, c.memoryBytes)) };
  }


  /**
   * Ends the job for a request that can never succeed (a partition that does not fit, more workers than
   * blocks): every waiting worker and every rank at the barrier gets the message, as a permanent status,
   * so it stops instead of registering again.
   */
  private stopFor(err: PermanentError): void {
    // The reason itself is each process's last words (the CLI prints it once, on exit).
    log.error('the job cannot run as configured: stopping every process');
    this.failure = err;
    this.phase = 'done';
    clearTimeout(this.pending.timer);
    this.waiting.splice(0).forEach((w) => w.reject(err));
    this.pending.waiters.splice(0).forEach((w) => w.reject(err));
    // Let those answers reach the workers before the coordinator goes down.
    setTimeout(() => this.events.done(), 500);
  }

  private assign(): void {
    // Stable rank identities where workers give hints (Indexed Job pods): rank i is pod i.
    const hint = (w: { req: RegisterRequest }) => (w.req.rankHint >= 0 ? w.req.rankHint : Infinity);
    this.waiting.sort((a, b) => hint(a) - hint(b));
    this.capacities = this.waiting.map((w) => ({ device: w.req.device, memoryBytes: w.req.memoryBytes }));
    try {
      // Every stage must fit before any worker loads weights, not only the one the run starts in.
      this.o.stack.plan.stages.forEach((_, k) => this.plan(k));
      this.partition = this.plan(this.state.stage);
    } catch (err) {
      if (err instanceof PermanentError) return this.stopFor(err);
      throw err;
    }
    this.epoch++;
    const workers = this.waiting;
    this.waiting = [];
    this.ranks = workers.map((w) => w.req.workerId);
    this.phase = 'running';
    this.pending = { reports: new Map(), waiters: [] };
    log.info({ epoch: this.epoch, partition: this.partition.map((p, r) => ({ rank: r, worker: this.ranks[r], blocks: `${p.start}..${p.end - 1}`, cost: p.cost })) }, 'partition planned');
    workers.forEach((w, rank) =>
      w.resolve({
        jobId: this.o.jobId,
        rank,
        worldSize: workers.length,
        range: this.partition[rank],
        nextPeer: rank + 1 < workers.length ? workers[rank + 1].req.peerAddress : '',
        firstPeer: rank > 0 && rank === workers.length - 1 ? workers[0].req.peerAddress : '',
        runConfigJson: JSON.stringify(this.o.run),
        natsUrl: this.o.natsUrl,
        stage: this.state.stage,
        startStep: this.state.step,
        resumeCheckpoint: this.resumeDir,
        schedule: this.o.schedule,
        microBatches: this.o.microBatches,
        epoch: this.epoch,
        partition: this.partition,
        stageStep: this.state.stageStep,
        positionEpoch: this.state.position.epoch,
        positionIndex: this.state.position.index,
        incarnation: this.o.incarnation,
      }),
    );
    this.stepStarted = Date.now();
    this.armTimer(this.state.step);
  }

  rankOf(workerId: string): number {
    return this.ranks.indexOf(workerId);
  }

  /** The step barrier: resolves when every rank has reported this step (or its evaluation). */
  report(r: StepReportMsg): Promise<StepDecisionMsg> {
    if (r.epoch !== this.epoch) return Promise.reject(new Error(`report for assignment epoch ${r.epoch}, the job is at epoch ${this.epoch}: register again`));
    // A training report names the step it ran (0-based); an evaluation follows the step it evaluates.
    const expected = r.isEval ? this.state.step - 1 : this.state.step;
    if (r.step !== expected) return Promise.reject(new Error(`${r.isEval ? 'evaluation' : 'step'} report for step ${r.step}, the job expects step ${expected}`));
    if (this.phase !== 'running') return Promise.reject(new Error('the job is re-assigning: register again'));
    // Only the worker the assignment gave this rank may report for it.
    if (this.ranks[r.rank] !== r.workerId) return Promise.reject(new Error(`worker ${r.workerId} is not rank ${r.rank} of the current assignment: register again`));
    return new Promise((resolve, reject) => {
      this.pending.reports.set(r.rank, r);
      this.pending.waiters.push({ resolve, reject });
      if (this.pending.reports.size === this.ranks.length) {
        const reports = [...this.pending.reports.values()].sort((a, b) => a.rank - b.rank);
        const { waiters, timer } = this.pending;
        clearTimeout(timer);
        this.pending = { reports: new Map(), waiters: [] };
        let d: StepDecisionMsg;
        try {
          d = reports[0].isEval ? this.afterEval(reports) : this.afterStep(reports);
        } catch (err) {
          if (!(err instanceof PermanentError)) throw err;
          this.pending.waiters = waiters;
          return this.stopFor(err);
        }
        waiters.forEach((w) => w.resolve(d));
        // Only a job that goes on has a next barrier (an armed timer would also keep an aborted coordinator alive).
        if (d.directive === 'CONTINUE' || d.directive === 'EVALUATE') this.armTimer(d.step + (d.directive === 'EVALUATE' ? 0 : 1));
      }
    });
  }

  /**
   * Every rank must reach the next barrier within the step timeout, counted from the previous one: a
   * rank that died, stalled or lost its link anywhere in the step is noticed, not waited for forever.
   */
  private armTimer(step: number): void {
    const timeout = this.o.stepTimeoutMs ?? 0;
    clearTimeout(this.pending.timer);
    if (timeout <= 0) return;
    const epoch = this.epoch;
    this.pending.timer = setTimeout(() => {
      if (this.epoch !== epoch || this.phase !== 'running') return;
      const missing = this.ranks.map((_, rank) => rank).filter((rank) => !this.pending.reports.has(rank));
      this.fail(`rank(s) ${missing.join(', ')} did not reach the barrier of step ${step} within ${timeout} ms`);
    }, timeout);
  }

  /** Fails the current assignment over: every rank registers again and resumes from the last commit. */
  fail(reason: string): void {
    // Running, or re-assigning after a re-plan but still waiting for that checkpoint's shards.
    if (this.phase !== 'running' && !(this.phase === 'waiting' && this.pendingCommit)) return;
    log.warn({ reason, epoch: this.epoch }, 'a rank failed: re-assigning the job from the last committed checkpoint');
    this.phase = 'waiting';
    clearTimeout(this.pending.timer);
    const err = new Error(`the job is re-assigning (${reason}): register again`);
    this.pending.waiters.forEach((w) => w.reject(err));
    this.pending = { reports: new Map(), waiters: [] };
    this.pendingCommit = null;
    this.shards.clear();
    const from = this.events.recover(reason, this.epoch + 1);
    this.policy.restart(from?.state ?? freshState());
    this.resumeDir = from?.dir ?? '';
    this.maybeAssign();
  }

  private afterStep(reports: StepReportMsg[]): StepDecisionMsg {
    const last = reports[reports.length - 1];
    const stage = this.state.stage;
    const d = this.policy.afterStep({
      lossSum: last.lossSum,
      klSum: last.klSum,
      tokens: last.tokens,
      gradSqSum: reports.reduce((s, r) => s + r.gradSqSum, 0),
      stageSteps: reports[0].stageSteps,
      position: { epoch: reports[0].positionEpoch, index: reports[0].positionIndex },
    });
    this.lastLoss = last.lossSum / last.tokens;
    this.evalBatches = reports[0].evalBatches;
    const now = Date.now();
    this.events.step({ step: this.state.step, stage, loss: this.lastLoss, kl: last.klSum / last.tokens, gradNorm: Math.sqrt(reports.reduce((s, r) => s + r.gradSqSum, 0)), clipScale: d.clipScale, stageStep: d.stageStep, stageSteps: d.stageSteps, tokens: last.tokens, seconds: (now - this.stepStarted) / 1000, reports });
    this.stepStarted = now;
    if (d.skip) log.warn({ step: this.state.step, loss: this.lastLoss, consecutive: this.policy.badSteps }, 'non-finite loss or gradient: the update of this step is skipped on every rank');
    if (d.directive === 'ABORT') {
      this.abortReason = d.abortReason!;
      log.error({ reason: this.abortReason }, 'aborting the job');
      // Let the ABORT answers reach every rank before the coordinator goes down.
      setTimeout(() => this.events.done(), 500);
    }
    return this.decide(d);
  }

  private afterEval(reports: StepReportMsg[]): StepDecisionMsg {
    const last = reports[reports.length - 1];
    const loss = last.evalLossSum / last.evalTokens;
    const stage = this.state.stage;
    const d = this.policy.afterEval(loss);
    this.events.eval({ step: this.state.step, stage, loss, improved: d.improved });
    if (d.earlyStop) this.events.earlyStop(d.earlyStop.stage, d.earlyStop.step, d.earlyStop.best);
    return this.decide(d);
  }

  /** The policy's decision on the wire, with what the job adds: stage signals and re-planning. */
  private decide(d: StepDecision): StepDecisionMsg {
    let directive: StepDecisionMsg['directive'] = d.directive;
    let save = d.save;
    if (d.stageEnd) this.events.stageEnd(d.stageEnd);
    if (d.stageEnd && d.directive === 'CONTINUE') {
      const next = d.stage;
      this.events.stage(next, this.state.step, this.o.stack.plan.stages[next].trainable);
      // A new mask may balance differently: ranks save, register again and resume on a new split.
      const replanned = this.o.staticPartition ? this.partition : this.plan(next, this.ranks.length);
      if (replanned.some((p, r) => p.start !== this.partition[r].start || p.end !== this.partition[r].end)) {
        log.info({ stage: next, from: this.partition.map((p) => `${p.start}..${p.end - 1}`), to: replanned.map((p) => `${p.start}..${p.end - 1}`) }, 're-planning the partition for the new freeze mask');
        directive = 'REASSIGN';
        save = true;
        this.phase = 'waiting';
      }
    }
    if (save) this.pendingCommit = { step: this.state.step, state: { ...this.state } };
    return { step: d.step, gradNorm: d.gradNorm, clipScale: d.clipScale, stageStep: d.stageStep, stageSteps: d.stageSteps, evalBatches: this.evalBatches, directive, stage: d.stage, save };
  }

  commitShard(s: ShardReportMsg): void {
    if (this.pendingCommit?.step !== s.step) throw new Error(`shard report for step ${s.step}, but no checkpoint of step ${s.step} is being committed`);
    // One shard per rank: a repeated report replaces the earlier one instead of standing in for another rank.
    const list = (this.shards.get(s.step) ?? []).filter((x) => x.rank !== s.rank);
    list.push(s);
    this.shards.set(s.step, list);
    if (list.length === this.ranks.length && this.pendingCommit?.step === s.step) {
      const { state } = this.pendingCommit;
      this.pendingCommit = null;
      this.shards.delete(s.step);
      this.lastCheckpoint = this.resumeDir = this.events.commit(s.step, state, list.sort((a, b) => a.rank - b.rank), this.partition);
      this.maybeAssign();
    }
  }

  finishExport(): void {
    clearTimeout(this.pending.timer);
    this.phase = 'done';
    this.events.done();
  }
}
