// CPU time per training step of other processes (a `propipe train` child, or each worker of a launch):
// the kernel's per-thread run time (/proc/<pid>/task/*/schedstat, nanoseconds, every thread of the
// process: ONNX Runtime's pool included) sampled whenever the run's metrics.jsonl gains a step line.
// On a shared machine a step's wall time grows with other processes' load; its CPU time barely does.
import fs from 'node:fs';
import path from 'node:path';

/** CPU seconds of every thread of `pid` so far, or null once it has exited. */
export function processCpuSeconds(pid: number): number | null {
  let ns = 0;
  try {
    for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // A thread that ended between the listing and the read.
      }
    }
  } catch {
    return null;
  }
  return ns / 1e9;
}

/** Samples the CPU time of named processes at every new step line of `dir`/metrics.jsonl. */
export class StepCpuSampler {
  private readonly pids = new Map<string, number>();
  private readonly marks: { step: number; cpu: Map<string, number> }[] = [];
  private lines = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly dir: string, everyMs = 5) {
    this.timer = setInterval(() => this.poll(), everyMs);
  }

  watch(name: string, pid: number): void {
    this.pids.set(name, pid);
  }

  private poll(): void {
    let text: string;
    try {
      text = fs.readFileSync(path.join(this.dir, 'metrics.jsonl'), 'utf8');
    } catch {
      return;
    }
    const rows = text.split('\n').filter((l) => l.trim());
    if (rows.length === this.lines) return;
    const fresh = rows.slice(this.lines);
    this.lines = rows.length;
    const cpu = new Map<string, number>();
    for (const [name, pid] of this.pids) {
      const s = processCpuSeconds(pid);
      if (s !== null) cpu.set(name, s);
    }
    for (const r of fresh) {
      const rec = JSON.parse(r) as { loss?: unknown; step?: number };
      if (typeof rec.loss === 'number' && typeof rec.step === 'number' && !this.marks.some((m) => m.step === rec.step)) this.marks.push({ step: rec.step, cpu });
    }
  }

  /** CPU seconds of each watched process in each step after `skip` (from the previous step's line to this one's). */
  stop(skip: number): Map<string, number[]> {
    clearInterval(this.timer);
    const out = new Map<string, number[]>();
    for (const name of this.pids.keys()) {
      const per: number[] = [];
      for (let i = 1; i < this.marks.length; i++) {
        const [a, b] = [this.marks[i - 1].cpu.get(name), this.marks[i].cpu.get(name)];
        if (this.marks[i].step > skip && a !== undefined && b !== undefined) per.push(b - a);
      }
      out.set(name, per);
    }
    return out;
  }
}
