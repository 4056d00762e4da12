// What a pipelined bench job leaves behind, read back: the coordinator's step records (metrics.jsonl)
// and every rank's spans (trace.json, Chrome trace format).
import fs from 'node:fs';
import path from 'node:path';

export interface TraceEvent {
  name: string;
  ph: string;
  ts: number;
  dur: number;
  tid: number;
  args?: { step?: number };
}

export interface StepRecord {
  time: number;
  step: number;
  tokens: number;
  seconds: number;
  busy: number[];
}

export function readMetrics(dir: string): StepRecord[] {
  return fs
    .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((r) => typeof r.loss === 'number' && Array.isArray(r.busy))
    .map((r) => ({ time: Date.parse(r.time), step: r.step, tokens: r.tokens, seconds: r.seconds, busy: r.busy }));
}

/** trace.json is a JSON array whose last lines may be missing (a crashed run): read it line by line. */
export function readTrace(dir: string): TraceEvent[] {
  return fs
    .readFileSync(path.join(dir, 'trace.json'), 'utf8')
    .split('\n')
    .map((l) => l.trim().replace(/,$/, ''))
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as TraceEvent)
    .filter((e) => e.ph === 'X');
}

export const isCompute = (name: string) => /^(F|B|W|teacher F)\d+$/.test(name);
