// The live progress display of a training run at a terminal (HF Trainer's progress bar, with the
// stage plan in it): overall steps, stage k/K and its blocks, loss, validation loss and whether it
// improved, learning rate, gradient norm and clipping, tokens/s, ETA, and for pipelined runs each
// rank's busy share. It is driven by metrics.jsonl records only, so a single-process run, a pipelined
// one and the demo show the same thing. Log lines print above it (cli-progress redraws below them).
import cliProgress from 'cli-progress';
import { logFormat, setLogPrinter } from '../common/log.ts';
import { formatNumber, paint } from '../common/log-format.ts';

export interface RunDisplayOptions {
  /** Shown before the stage (the demo: which of its runs this is). */
  label?: string;
  /** Default: when logs are pretty, stderr is a terminal and CI is unset. */
  enabled?: boolean;
  /** An extra note on the last line (launch: how many worker log lines are folded). */
  note?: () => string;
}

type Rec = Record<string, unknown>;
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (x: number) => String(x).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

export class RunDisplay {
  readonly enabled: boolean;
  private bars: cliProgress.MultiBar | null = null;
  private rows: cliProgress.SingleBar[] = [];
  private stages: number[][] = [];
  private maxSteps: number | undefined;
  private workers = 0;
  private stage = 0;
  private stageStartStep = 0;
  private stageSteps = 0;
  private step = 0;
  private last: Rec = {};
  private val: { loss: number; improved: boolean | null; best: number } | null = null;
  private secondsPerStep: number | null = null;
  private lastTime: number | null = null;

  constructor(private readonly o: RunDisplayOptions = {}) {
    this.enabled = o.enabled ?? (logFormat() === 'pretty' && process.stderr.isTTY === true && !process.env.CI);
  }

  observe(r: Rec): void {
    if (r.event === 'run') {
      this.stages = (r.stages as number[][]) ?? [];
      this.maxSteps = num((r.config as Rec | undefined)?.max_steps);
      this.workers = num(r.workers) ?? 0;
    } else if (r.event === 'stage_start') {
      this.stage = num(r.stage) ?? this.stage;
      this.stageStartStep = num(r.step) ?? this.step;
      this.stageSteps = num(r.steps) ?? this.stageSteps;
      this.val = null;
    } else if (r.eval_loss !== undefined) {
      const loss = num(r.eval_loss)!;
      this.val = { loss, improved: (r.improved as boolean | null) ?? null, best: Math.min(loss, this.val?.best ?? Infinity) };
    } else if (r.loss !== undefined && r.step !== undefined) {
      const time = Date.parse(String(r.time));
      if (this.lastTime !== null && Number.isFinite(time)) {
        const dt = (time - this.lastTime) / 1000;
        this.secondsPerStep = this.secondsPerStep === null ? dt : 0.8 * this.secondsPerStep + 0.2 * dt;
      }
      this.lastTime = time;
      this.step = num(r.step)!;
      this.stage = num(r.stage) ?? this.stage;
      this.stageSteps = num(r.stage_steps) ?? this.stageSteps;
      this.last = r;
    } else return;
    this.render();
  }

  /** Optimizer steps the run will take, as far as known now (early stopping can only shorten it). */
  total(): number {
    const K = Math.max(this.stages.length, this.stage + 1);
    const planned = this.stageStartStep + (K - this.stage) * this.stageSteps;
    return Math.max(this.step, this.maxSteps !== undefined ? Math.min(planned, this.maxSteps) : planned);
  }

  /** The status lines as plain text (without colors when NO_COLOR is set). */
  lines(): string[] {
    const total = this.total();
    const K = Math.max(this.stages.length, this.stage + 1);
    const blocks = this.stages[this.stage]?.join(',') ?? '?';
    const width = 24;
    const filled = total > 0 ? Math.round((width * this.step) / total) : 0;
    const bar = paint('cyan', '█'.repeat(filled)) + paint('gray', '░'.repeat(width - filled));
    const eta = this.secondsPerStep !== null ? formatDuration((total - this.step) * this.secondsPerStep) : '–';
    const label = this.o.label ? `${paint('bold', this.o.label)}  ` : '';
    const head = `${label}stage ${this.stage + 1}/${K} · blocks ${blocks}  ${bar} ${this.step}/${this.stageSteps ? total : '?'} steps  ETA ${eta}`;
    const r = this.last;
    const loss = num(r.loss);
    const parts = [`loss ${loss !== undefined ? loss.toFixed(4) : '–'}`];
    if (this.val) {
      const mark = this.val.improved === true ? paint('green', '↓ improved') : this.val.improved === false ? paint('yellow', 'no better') : '';
      parts.push(`val ${this.val.loss.toFixed(4)} ${mark}`.trimEnd());
    }
    if (num(r.lr) !== undefined) parts.push(`lr ${num(r.lr)!.toExponential(2)}`);
    if (num(r.grad_norm) !== undefined) parts.push(`grad ${formatNumber(num(r.grad_norm)!)}${(num(r.clip_scale) ?? 1) < 1 ? paint('yellow', ' clipped') : ''}`);
    if (num(r.tokens_per_s) !== undefined) parts.push(`${Math.round(num(r.tokens_per_s)!)} tok/s`);
    const lines = [head, `  ${parts.join('  ·  ')}`];
    const busy = r.busy as number[] | undefined;
    const seconds = num(r.seconds);
    if ((busy?.length ?? this.workers) > 1) {
      const shares = busy && seconds ? busy.map((b, i) => `r${i} ${Math.round((100 * b) / seconds)}%`).join('  ') : '–';
      lines.push(`  ranks busy  ${shares}${this.o.note ? `   ${paint('gray', this.o.note())}` : ''}`);
    }
    return lines;
  }

  private render(): void {
    if (!this.enabled) return;
    const lines = this.lines();
    if (!this.bars || this.rows.length !== lines.length) this.start(lines.length);
    for (const b of this.rows) b.update(this.step);
  }

  private start(count: number): void {
    this.bars?.stop();
    const bars = new cliProgress.MultiBar({ stream: process.stderr, hideCursor: true, clearOnComplete: false, gracefulExit: true, linewrap: false, fps: 4, forceRedraw: true });
    this.rows = Array.from({ length: count }, (_, i) => bars.create(1, 0, {}, { format: () => this.lines()[i] ?? '' }));
    setLogPrinter((text) => {
      bars.log(text + '\n');
      bars.update();
    });
    this.bars = bars;
  }

  stop(): void {
    if (!this.bars) return;
    setLogPrinter(null);
    this.bars.update();
    this.bars.stop();
    this.bars = null;
  }
}
