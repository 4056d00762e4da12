// This process's memory as the kernel counts it: resident now (VmRSS) and the high-water mark (VmHWM),
// which catches peaks that sampling process.memoryUsage() between steps would miss.
import fs from 'node:fs';

export interface ProcMemory {
  rssBytes: number;
  hwmBytes: number;
}

export function procMemory(): ProcMemory {
  let text = '';
  try {
    text = fs.readFileSync('/proc/self/status', 'utf8');
  } catch {
    // Not Linux: the peak is unknown, the current RSS is the best lower bound.
    const rss = process.memoryUsage().rss;
    return { rssBytes: rss, hwmBytes: rss };
  }
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { rssBytes: kb('VmRSS'), hwmBytes: kb('VmHWM') };
}
