// This machine's measured figures (`propipe plan --calibrate`), stored as a small JSON file and turned
// into the `cpu` device profile; and user overrides of any device's efficiencies.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { CPU_DEFAULT, PHASES, type DeviceProfile, type Phase } from './devices.ts';

const phaseSchema = z.object({ forward: z.number().positive(), recompute: z.number().positive(), inputGrad: z.number().positive(), weightGrad: z.number().positive() });

export const calibrationSchema = z.object({
  version: z.literal(1),
  measured_at: z.string(),
  cpu_model: z.string(),
  cores: z.number().int().positive(),
  threads: z.number().int().nonnegative(),
  /** 'cpu': measured in CPU time and scaled by `parallelism` (tasks/calibrate.ts); absent: wall time (older files). */
  clock: z.literal('cpu').optional(),
  /** The sessions' speed-up from their threads, measured on the probe (CPU time over wall time). */
  parallelism: z.number().positive().optional(),
  /** What was measured, and the figures the cpu profile takes from it (quiet-machine wall rates). */
  matmul_flops: z.number().positive(),
  bandwidth: z.number().positive(),
  /** Element-wise ops with exp/sigmoid per element (absent in files written before it was measured). */
  math_bandwidth: z.number().positive().optional(),
  op_seconds: z.number().nonnegative(),
  run_seconds: z.number().nonnegative(),
  optimizer_seconds_per_param: z.number().nonnegative(),
  /** The gradient sum of a second micro-batch (absent in files written before it was measured). */
  accumulate_seconds_per_param: z.number().nonnegative().optional(),
  efficiency: phaseSchema,
  /** The block shape and timings the efficiencies were solved from. */
  probe: z.record(z.string(), z.unknown()),
});

export type Calibration = z.infer<typeof calibrationSchema>;

export function defaultCalibrationFile(): string {
  return process.env.PROPIPE_CALIBRATION ?? path.join(os.homedir(), '.cache', 'propipe', 'calibration.json');
}

export function readCalibration(file: string): Calibration | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const parsed = calibrationSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`${file} is not a propipe calibration (${parsed.error.issues[0].path.join('.')}: ${parsed.error.issues[0].message}); run 'propipe plan --calibrate' again`);
  return parsed.data;
}

export function writeCalibration(file: string, c: Calibration): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(c, null, 2) + '\n');
}

/**
 * The cpu profile of a calibration: quiet-machine wall time by default; `clock: 'cpu'` prices CPU seconds
 * instead (the rates without the threads' speed-up), what a rank's process spends whatever the load.
 */
export function cpuProfile(c: Calibration | null, memoryBytes: number, clock: 'wall' | 'cpu' = 'wall'): DeviceProfile {
  if (!c) return { ...CPU_DEFAULT, memoryBytes };
  const k = clock === 'cpu' ? 1 / (c.parallelism ?? 1) : 1;
  return {
    ...CPU_DEFAULT,
    memoryBytes,
    matmulFlops: c.matmul_flops * k,
    bandwidth: c.bandwidth * k,
    mathBandwidth: (c.math_bandwidth ?? CPU_DEFAULT.mathBandwidth) * k,
    opSeconds: c.op_seconds,
    runSeconds: c.run_seconds,
    optimizerSecondsPerParam: c.optimizer_seconds_per_param,
    accumulateSecondsPerParam: c.accumulate_seconds_per_param ?? CPU_DEFAULT.accumulateSecondsPerParam,
    efficiency: { ...c.efficiency },
    source: `calibrated ${c.measured_at} on ${c.cpu_model} (${c.threads || c.cores} threads; ${probeText(c.probe)})`,
  };
}

/** What the efficiencies were measured on: they hold best for runs of that width and type. */
function probeText(probe: Record<string, unknown>): string {
  const lora = typeof probe.lora_rank === 'number' && probe.lora_rank > 0 ? `, LoRA rank ${probe.lora_rank}` : '';
  return `probe: blocks of hidden ${probe.hidden ?? '?'}${lora}`;
}

/** `0.5` sets every phase; `forward=0.5,weightGrad=0.3` sets some. */
export function withEfficiency(d: DeviceProfile, spec: string): DeviceProfile {
  const eff = { ...d.efficiency };
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [k, v] = part.includes('=') ? part.split('=') : [null, part];
    const x = Number(v);
    if (!(x > 0 && x <= 1)) throw new Error(`--efficiency: '${v}' is not a fraction in (0, 1]`);
    if (k === null) PHASES.forEach((p) => (eff[p] = x));
    else if ((PHASES as readonly string[]).includes(k)) eff[k as Phase] = x;
    else throw new Error(`--efficiency: '${k}' is not one of ${PHASES.join(', ')}`);
  }
  return { ...d, efficiency: eff };
}
