// metrics.jsonl: one JSON object per line (steps, evaluations, stage events), appended as they happen
// so a crashed run keeps everything up to its last step.
import fs from 'node:fs';
import path from 'node:path';

export class MetricsLog {
  private readonly fd: number;

  constructor(outputDir: string) {
    fs.mkdirSync(outputDir, { recursive: true });
    this.fd = fs.openSync(path.join(outputDir, 'metrics.jsonl'), 'a');
  }

  write(record: Record<string, unknown>): void {
    fs.writeSync(this.fd, JSON.stringify({ time: new Date().toISOString(), ...record }) + '\n');
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
