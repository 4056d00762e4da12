// Small helpers shared by the benchmarks: flags, timing, seeded numbers, and a description of the host.
// Benchmarks print exactly one JSON document to stdout; everything else goes to stderr.
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import ort from 'onnxruntime-node';
import { Rng as ModelRng } from '../common/rng.ts';

/** `--name value`, `--name=value`, `--flag` (true) and `--no-flag` (false). */
export class Flags {
  private readonly values = new Map<string, string | boolean>();

  constructor(argv: readonly string[]) {
    for (let i = 0; i < argv.length; i++) {
      const arg = argv[i];
      if (!arg.startsWith('--')) throw new Error(`unexpected argument '${arg}' (flags are --name value)`);
      const body = arg.slice(2);
      const eq = body.indexOf('=');
      if (eq >= 0) this.values.set(body.slice(0, eq), body.slice(eq + 1));
      else if (body.startsWith('no-')) this.values.set(body.slice(3), false);
      else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) this.values.set(body, argv[++i]);
      else this.values.set(body, true);
    }
  }

  /** A positive integer flag, or `fallback` when it is absent. */
  int(name: string, fallback: number): number {
    const v = this.values.get(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer (got ${JSON.stringify(v)})`);
    return n;
  }

  /** A positive number flag, or undefined when it is absent. */
  number(name: string): number | undefined {
    const v = this.values.get(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number (got ${JSON.stringify(v)})`);
    return n;
  }

  /** A string flag, or undefined when it is absent. */
  str(name: string): string | undefined {
    const v = this.values.get(name);
    if (typeof v === 'boolean') throw new Error(`--${name} needs a value`);
    return v;
  }

  bool(name: string, fallback: boolean): boolean {
    const v = this.values.get(name);
    if (v === undefined) return fallback;
    if (typeof v === 'boolean') return v;
    if (v === 'true' || v === '1') return true;
    if (v === 'false' || v === '0') return false;
    throw new Error(`--${name} must be true or false (got ${JSON.stringify(v)})`);
  }

  /** Throws on any flag not in `known`, so a typo does not silently run the default shape. */
  check(known: readonly string[]): void {
    const unknown = [...this.values.keys()].filter((k) => !known.includes(k));
    if (unknown.length > 0) throw new Error(`unknown flag(s): ${unknown.map((k) => `--${k}`).join(', ')}; known: ${known.map((k) => `--${k}`).join(' ')}`);
  }
}

/** Progress and notes: stderr only, stdout is the JSON document. */
export function info(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

/** Runs `fn` `warmup` times untimed, then `reps` times; returns the wall time of each timed run in ms. */
export async function timeRuns(fn: () => Promise<unknown>, warmup: number, reps: number): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  return times;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** The project's seeded generator, with the benches' one extra: arrays of uniform weights. */
export class Rng extends ModelRng {
  next(): number {
    return this.nextFloat();
  }
  /** `n` values uniform in [-a, a] with a = std·√3, i.e. of standard deviation `std`. */
  uniformArray(n: number, std: number): Float32Array {
    const a = std * Math.sqrt(3);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (2 * this.nextFloat() - 1) * a;
    return out;
  }
}

/** FNV-1a of a string: a per-tensor seed that does not depend on the order tensors are drawn in. */
export function hashSeed(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export function defaultThreads(): number {
  return os.availableParallelism();
}

/** What the numbers were measured on. */
export function hostInfo(threads: number) {
  const cpus = os.cpus();
  return {
    onnxruntime_node: ort.env.versions.node ?? null,
    onnxruntime_common: ort.env.versions.common,
    node: process.version,
    platform: `${os.platform()} ${os.arch()} ${os.release()}`,
    cpu_model: cpus[0]?.model ?? 'unknown',
    cpu_count: cpus.length,
    cpu_mhz: cpus[0]?.speed || null,
    /** intraOpNumThreads of every session (interOpNumThreads is 1). */
    threads,
    /** 1/5/15-minute load averages when the document was written: other work on the machine skews every number. */
    load_average: os.loadavg().map((x) => round(x, 2)),
  };
}

/** True when the module at `url` is the script node was started with. */
export function isMain(url: string): boolean {
  const entry = process.argv[1];
  return entry !== undefined && url === pathToFileURL(entry).href;
}

export function printJson(doc: unknown): void {
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
}
