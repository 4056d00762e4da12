// Stage-level early stopping on validation loss, with state that survives a checkpoint.
export interface EarlyStopState {
  best: number | null;
  bad: number;
}

export class EarlyStopper {
  state: EarlyStopState = { best: null, bad: 0 };

  constructor(readonly patience: number, readonly minDelta = 0) {}

  /** Records one evaluation; true when the stage should end now. */
  observe(loss: number): { improved: boolean; stop: boolean } {
    const improved = this.state.best === null || loss < this.state.best - this.minDelta;
    if (improved) this.state = { best: loss, bad: 0 };
    else this.state = { ...this.state, bad: this.state.bad + 1 };
    return { improved, stop: this.patience > 0 && this.state.bad >= this.patience };
  }

  reset(): void {
    this.state = { best: null, bad: 0 };
  }
}
