// A progress bar for people at a terminal; pipes and CI get the structured log lines instead.
import cliProgress from 'cli-progress';

export interface StepReport {
  stage: number;
  stages: number;
  step: number;
  loss: number;
  tokensPerSec: number;
}

export class Progress {
  private bar: cliProgress.SingleBar | null = null;

  constructor(private readonly enabled = process.stderr.isTTY === true && !process.env.CI) {}

  startStage(label: string, total: number, done: number): void {
    if (!this.enabled) return;
    this.stop();
    this.bar = new cliProgress.SingleBar(
      { format: `${label} |{bar}| {value}/{total} steps | loss {loss} | {tps} tok/s`, stream: process.stderr, hideCursor: true, clearOnComplete: false },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(total, done, { loss: '-', tps: '-' });
  }

  update(done: number, r: StepReport): void {
    this.bar?.update(done, { loss: r.loss.toFixed(4), tps: Math.round(r.tokensPerSec) });
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
