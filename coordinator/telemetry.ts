// What a user watches: Prometheus metrics (step time, tokens/s, loss, stage, per-rank busy/idle) and a
// Chrome trace-event timeline of every rank's forward/backward/send/receive/optimizer spans, which
// opens in Perfetto and shows the pipeline bubbles.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Gauge, Registry } from 'prom-client';
import type { StepReportMsg } from '../proto/messages.ts';

export class Telemetry {
  readonly registry = new Registry();
  private readonly stepSeconds = new Gauge({ name: 'propipe_step_seconds', help: 'wall time of the last optimizer step', registers: [this.registry] });
  private readonly tokensPerSecond = new Gauge({ name: 'propipe_tokens_per_second', help: 'target tokens per second of the last step', registers: [this.registry] });
  private readonly loss = new Gauge({ name: 'propipe_loss', help: 'mean token loss of the last step', registers: [this.registry] });
  private readonly evalLoss = new Gauge({ name: 'propipe_eval_loss', help: 'last validation loss', registers: [this.registry] });
  private readonly stage = new Gauge({ name: 'propipe_stage', help: 'current stage index', registers: [this.registry] });
  private readonly step = new Gauge({ name: 'propipe_step', help: 'optimizer steps completed', registers: [this.registry] });
  private readonly busy = new Gauge({ name: 'propipe_rank_busy_seconds', help: 'compute time of a rank in the last step', labelNames: ['rank'], registers: [this.registry] });
  private readonly idle = new Gauge({ name: 'propipe_rank_idle_seconds', help: 'time a rank waited or transferred in the last step', labelNames: ['rank'], registers: [this.registry] });
  private server: http.Server | null = null;
  private trace: number | null = null;

  constructor(outputDir: string | null, append = false) {
    if (outputDir) {
      fs.mkdirSync(outputDir, { recursive: true });
      // The JSON array format may stay unterminated, so a crashed run's trace still opens; a restarted
      // coordinator appends to it.
      const file = path.join(outputDir, 'trace.json');
      const fresh = !append || !fs.existsSync(file) || fs.statSync(file).size === 0;
      this.trace = fs.openSync(file, fresh ? 'w' : 'a');
      if (fresh) fs.writeSync(this.trace, '[\n');
    }
  }

  async serve(port: number, host = '127.0.0.1'): Promise<number> {
    this.server = http.createServer(async (req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': this.registry.contentType }).end(await this.registry.metrics());
    });
    await new Promise<void>((resolve) => this.server!.listen(port, host, resolve));
    return (this.server.address() as { port: number }).port;
  }

  recordStep(r: { step: number; stage: number; loss: number; tokens: number; seconds: number; reports: readonly StepReportMsg[] }): void {
    this.step.set(r.step);
    this.stage.set(r.stage);
    this.loss.set(r.loss);
    this.stepSeconds.set(r.seconds);
    this.tokensPerSecond.set(r.seconds > 0 ? r.tokens / r.seconds : 0);
    for (const rep of r.reports) {
      this.busy.set({ rank: String(rep.rank) }, rep.busySeconds);
      this.idle.set({ rank: String(rep.rank) }, Math.max(0, rep.stepSeconds - rep.busySeconds));
      if (this.trace !== null && rep.traceJson) {
        for (const span of JSON.parse(rep.traceJson) as { name: string; start: number; end: number }[]) {
          const event = { name: span.name, cat: span.name.split(' ')[0], ph: 'X', ts: Math.round(span.start * 1000), dur: Math.max(1, Math.round((span.end - span.start) * 1000)), pid: 0, tid: rep.rank, args: { step: r.step } };
          fs.writeSync(this.trace, JSON.stringify(event) + ',\n');
        }
      }
    }
  }

  recordEval(loss: number): void {
    this.evalLoss.set(loss);
  }

  async close(): Promise<void> {
    if (this.trace !== null) {
      fs.writeSync(this.trace, JSON.stringify({ name: 'process_name', ph: 'M', pid: 0, args: { name: 'propipe pipeline' } }) + '\n]\n');
      fs.closeSync(this.trace);
      this.trace = null;
    }
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
