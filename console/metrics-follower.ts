// Follows a metrics.jsonl another process appends to (launch: the coordinator's; demo: each run's),
// handing every new complete record to a callback, from the size the file had when following began.
import fs from 'node:fs';

export class MetricsFollower {
  private offset: number;
  private partial = '';
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly file: string, private readonly onRecord: (r: Record<string, unknown>) => void, intervalMs = 250) {
    this.offset = fs.existsSync(file) ? fs.statSync(file).size : 0;
    this.timer = setInterval(() => this.poll(), intervalMs);
    this.timer.unref();
  }

  poll(): void {
    let size: number;
    try {
      size = fs.statSync(this.file).size;
    } catch {
      return; // not written yet
    }
    if (size < this.offset) this.offset = 0; // replaced by a fresh run
    if (size === this.offset) return;
    const fd = fs.openSync(this.file, 'r');
    const buf = Buffer.alloc(size - this.offset);
    fs.readSync(fd, buf, 0, buf.length, this.offset);
    fs.closeSync(fd);
    this.offset = size;
    const lines = (this.partial + buf.toString('utf8')).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.trim()) continue;
      try {
        this.onRecord(JSON.parse(line));
      } catch {
        // a torn line of a crashed writer: skip it
      }
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.poll();
  }
}
