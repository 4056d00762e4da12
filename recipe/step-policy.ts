// The rules of a training step, in one place: from what a step (or its evaluation) produced, decide
// what follows — the clip scale, whether the update is skipped (NaN/Inf), whether to evaluate, save,
// end the stage (epochs, steps, early stop, max_steps), stop, or abort. Pure: the coordinator's job
// drives it for any number of ranks, and the single-process run is that job with one rank.
import { clipScale } from '../model/train/adamw.ts';
import { EarlyStopper } from './early-stop.ts';
import type { TrainerState } from './checkpoints.ts';
import type { RunConfig } from './run-config.ts';

export const MAX_BAD_STEPS = 3;

/** Sums over every rank of one optimizer step. */
export interface StepTotals {
  lossSum: number;
  klSum: number;
  /** Target tokens of the step (the last rank counts them). */
  tokens: number;
  /** Σ of squared gradients over every rank: the global norm is its root. */
  gradSqSum: number;
  /** Steps the current stage lasts (rank 0 knows the data). */
  stageSteps: number;
  /** The data position after this step's batches. */
  position: { epoch: number; index: number };
}

export type Directive = 'CONTINUE' | 'EVALUATE' | 'STOP' | 'ABORT';
export type StageEndReason = 'epochs' | 'steps' | 'early-stop' | 'max-steps';

export interface StageEnd {
  stage: number;
  steps: number;
  ended: StageEndReason;
  bestValLoss: number | null;
}

export interface StepDecision {
  /** The 0-based step this decision follows. */
  step: number;
  gradNorm: number;
  /** Multiplies every gradient (global clipping); 0 when the update is skipped. */
  clipScale: number;
  /** The update of this step is skipped on every rank (non-finite loss or gradient norm). */
  skip: boolean;
  /** The stage step that ran and the stage length: the learning-rate schedule's inputs. */
  stageStep: number;
  stageSteps: number;
  directive: Directive;
  save: boolean;
  /** The stage the next step runs (changes at a stage transition). */
  stage: number;
  /** Set when this decision ends a stage. */
  stageEnd?: StageEnd;
  /** Set when this decision ends a stage early because validation loss stopped improving. */
  earlyStop?: { stage: number; step: number; best: number | null };
  /** Set on ABORT. */
  abortReason?: string;
}

export function freshState(): TrainerState {
  return { step: 0, stage: 0, stageStep: 0, position: { epoch: 0, index: 0 }, earlyStop: { best: null, bad: 0 }, tokens: 0 };
}

export class StepPolicy {
  state: TrainerState;
  private readonly stopper: EarlyStopper;
  badSteps = 0;
  private evalDue = false;
  private held: StepDecision | null = null;

  constructor(
    private readonly run: RunConfig,
    private readonly stages: number,
    private readonly hasVal: boolean,
    state: TrainerState = freshState(),
  ) {
    this.stopper = new EarlyStopper(run.early_stop_patience, run.early_stop_min_delta);
    this.state = state;
    this.stopper.state = state.earlyStop;
  }

  /** Continue from `state` (a resume or a fail-over to the last commit). */
  restart(state: TrainerState): void {
    this.state = state;
    this.stopper.state = state.earlyStop;
    this.held = null;
    this.evalDue = false;
  }

  /** After every rank has run step `state.step`. */
  afterStep(t: StepTotals): StepDecision {
    const gradNorm = Math.sqrt(t.gradSqSum);
    const loss = t.lossSum / t.tokens;
    const skip = !Number.isFinite(gradNorm) || !Number.isFinite(loss);
    const ran = this.state;
    this.state = { ...ran, step: ran.step + 1, stageStep: ran.stageStep + 1, position: t.position, tokens: ran.tokens + t.tokens };
    const held: StepDecision = {
      step: ran.step,
      gradNorm: skip ? NaN : gradNorm,
      clipScale: skip ? 0 : clipScale(gradNorm, this.run.max_grad_norm),
      skip,
      stageStep: ran.stageStep,
      stageSteps: t.stageSteps,
      directive: 'CONTINUE',
      save: false,
      stage: ran.stage,
    };
    this.held = held;
    // NaN or Inf never reaches the weights, and a run that keeps producing them stops.
    this.badSteps = skip ? this.badSteps + 1 : 0;
    if (this.badSteps >= MAX_BAD_STEPS) {
      const abortReason = `${this.badSteps} consecutive steps had a non-finite loss or gradient (last: step ${this.state.step}); lower the learning rate, check the data, or resume from an earlier checkpoint`;
      return { ...held, directive: 'ABORT', abortReason };
    }
    const stageOver = this.state.stageStep >= t.stageSteps;
    this.evalDue = this.hasVal && this.run.eval_steps > 0 && this.state.step % this.run.eval_steps === 0;
    // Every stage's last step is evaluated too, so each stage reports where it ended.
    if (this.evalDue || (this.hasVal && (stageOver || this.capped()))) return { ...held, directive: 'EVALUATE' };
    return this.finish(stageOver ? this.lengthReason() : null);
  }

  /** After the evaluation an EVALUATE decision asked for; counts toward early stopping when it was due. */
  afterEval(loss: number): StepDecision & { improved: boolean | null } {
    const held = this.held;
    if (!held) throw new Error('an evaluation report arrived without a step to follow');
    let improved: boolean | null = null;
    let stop = false;
    if (this.evalDue) {
      const o = this.stopper.observe(loss);
      this.state = { ...this.state, earlyStop: this.stopper.state };
      improved = o.improved;
      stop = o.stop;
    }
    const reason = stop ? 'early-stop' : this.state.stageStep >= held.stageSteps ? this.lengthReason() : null;
    const earlyStop = stop ? { stage: this.state.stage, step: this.state.step, best: this.stopper.state.best } : undefined;
    const d = this.finish(reason, stop ? undefined : loss);
    return { ...d, improved, ...(earlyStop ? { earlyStop } : {}) };
  }

  private capped(): boolean {
    return this.run.max_steps !== undefined && this.state.step >= this.run.max_steps;
  }

  private lengthReason(): StageEndReason {
    return this.run.steps_per_stage ? 'steps' : 'epochs';
  }

  private finish(reason: StageEndReason | null, lastVal?: number): StepDecision {
    const held = this.held!;
    let directive: Directive = 'CONTINUE';
    let save = this.run.save_steps > 0 && this.state.step % this.run.save_steps === 0;
    let stageEnd: StageEnd | undefined;
    const capped = this.capped();
    if (capped) reason ??= 'max-steps';
    if (reason) stageEnd = { stage: this.state.stage, steps: this.state.stageStep, ended: capped && reason !== 'early-stop' ? 'max-steps' : reason, bestValLoss: this.stopper.state.best ?? lastVal ?? null };
    if (reason && !capped) {
      const next = this.state.stage + 1;
      if (next >= this.stages) directive = 'STOP';
      else {
        this.state = { ...this.state, stage: next, stageStep: 0, position: { epoch: 0, index: 0 }, earlyStop: { best: null, bad: 0 } };
        this.stopper.reset();
      }
    }
    if (capped) directive = 'STOP';
    // The end of a run is always committed: resume and the pipelined export read it.
    if (directive === 'STOP') save = true;
    return { ...held, directive, save, stage: this.state.stage, stageEnd };
  }
}
