// The process's peak resident memory: VmHWM from /proc/self/status (the high-water mark the kernel keeps,
// so a transient peak between two samples still counts), or the current RSS where /proc is missing.
import fs from 'node:fs';

export function peakRssBytes(): number {
  try {
    const m = /VmHWM:\s+(\d+)\s+kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux: fall through
  }
  return process.memoryUsage().rss;
}
