import os from 'node:os';
import { cpuProfile, defaultCalibrationFile, readCalibration, withEfficiency, writeCalibration } from '../../plan/calibration.ts';
import { DEVICE_NAMES, GPUS, type DeviceProfile } from '../../plan/devices.ts';
import { alternatives, planRun, type Alternative, type RunRequest } from '../../plan/estimate.ts';
import { formatAlternatives, formatReport } from '../../plan/report.ts';
import { readModelConfig, resolveFrozenDtype, runRequest } from '../../plan/request.ts';
import { RUNTIME, type RuntimeFactors } from '../../plan/runtime.ts';
import { loadRunConfig, RunConfigError, type RunConfig } from '../../recipe/run-config.ts';
import { calibrate, type CalibrateOptions } from '../../tasks/calibrate.ts';
import { layerParamSpecs } from '../../model/llama/param-specs.ts';
import { isScheduleKind, SCHEDULE_KINDS } from '../../recipe/schedule-kind.ts';
import { UsageError, type Flags } from '../args.ts';
import type { Command } from '../command.ts';
import { PIPELINE_FLAGS } from '../pipeline-flags.ts';
import { runFlagSpecs, runOverrides } from '../run-flags.ts';


function device(f: Flags): DeviceProfile {
  const name = f.str('device') ?? 'cpu';
  if (!(DEVICE_NAMES as readonly string[]).includes(name)) throw new UsageError(`--device must be one of ${DEVICE_NAMES.join(', ')}, got '${name}'`);
  const memory = f.has('memory-gb') ? f.num('memory-gb') * 2 ** 30 : undefined;
  if (memory !== undefined && !(memory > 0)) throw new UsageError('--memory-gb must be positive');
  let d: DeviceProfile;
  if (name === 'cpu') d = cpuProfile(readCalibration(f.str('calibration') ?? defaultCalibrationFile()), memory ?? Math.floor(os.totalmem() * 0.8));
  else d = { ...GPUS[name], memoryBytes: memory ?? GPUS[name].memoryBytes };
  return f.has('efficiency') ? withEfficiency(d, f.str('efficiency')!) : d;
}

/** The command that runs what was planned: `launch` on this machine, coordinator + workers on a cluster. */
function launchCommand(req: RunRequest, userFlags: string[], changes: Record<string, string>): string {
  const flags = [...userFlags.filter((x) => !Object.keys(changes).some((k) => x.startsWith(`--${k} `))), ...Object.entries(changes).map(([k, v]) => `--${k} ${v}`)];
  const common = `--schedule ${req.schedule} --micro-batches ${req.microBatches} ${flags.join(' ')}`.trim();
  // Says which frozen precision was planned (`auto` resolves to the checkpoint's, as the trainer does).
  const note = req.frozenDtype !== 'fp32' ? `   # planned with ${req.frozenDtype} frozen weights` : '';
  if (req.device.kind === 'cpu') return `propipe launch --workers ${req.workers} ${common}${note}`;
  const gb = (req.device.memoryBytes / 2 ** 30).toFixed(0);
  return `propipe coordinator --workers ${req.workers} ${common}   # + ${req.workers} × propipe worker --device cuda --memory-gb ${gb}${note ? `;${note.slice(4)}` : ''}`;
}

/** The run flags as the user gave them (for the launch command). */
function givenRunFlags(f: Flags): string[] {
  const o = runOverrides(f);
  delete o.device;
  return Object.entries(o).map(([k, v]) => `--${k.replace(/_/g, '-')}${v === true ? '' : ` ${v}`}`);
}

function changesOf(a: Alternative, req: RunRequest): Record<string, string> {
  const c: Record<string, string> = {};
  if (a.request.quantBlockSize !== null && req.quantBlockSize === null) c.quantize = '4bit';
  if (a.request.batch !== req.batch) c['per-device-train-batch-size'] = String(a.request.batch);
  return c;
}

/** The run being planned: the YAML file and the run flags, with no dataset or output directory. */
function loadPlanRun(f: Flags): RunConfig {
  const overrides = runOverrides(f);
  delete overrides.device;
  try {
    return loadRunConfig(f.str('config'), { dataset: '(plan)', output_dir: '(plan)', ...overrides });
  } catch (err) {
    if (err instanceof RunConfigError) throw new UsageError(err.message);
    throw err;
  }
}

/**
 * `plan --calibrate --model M [run flags]`: probe blocks of M's shape, the run's micro-batch and the
 * run's type (LoRA adapters that train when it is LoRA). One block when a block is large (13B: 0.3 B
 * parameters), so that calibrating stays a matter of a minute; sequences capped at 512 tokens.
 */
function probeOf(run: RunConfig): Partial<CalibrateOptions> {
  const { config } = readModelConfig(run.model);
  const blockParams = layerParamSpecs(config, 0).reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  return { model: config, layers: blockParams > 50e6 ? 1 : 3, batch: run.per_device_train_batch_size, seq: Math.min(run.max_length, 512), loraRank: run.train_type === 'lora' ? run.lora_rank : 0 };
}

export const planCommand: Command = {
  name: 'plan',
  summary: 'predict every rank’s memory and step time for a run before launching it (needs only config.json)',
  usage: 'propipe plan --model DIR|config.json --workers N --device cpu|a10g|l4|a100-40|a100-80|h100 [--memory-gb G] [run flags] [--json] | propipe plan --calibrate [--model DIR [run flags]]',
  flags: {
    config: { type: 'string', description: 'YAML run file (the same as train’s)' },
    ...runFlagSpecs(),
    ...PIPELINE_FLAGS,
    workers: { type: 'string', description: 'pipeline workers (one device each)', default: '1' },
    device: { type: 'string', description: `device of every worker: ${DEVICE_NAMES.join(', ')}`, default: 'cpu' },
    'memory-gb': { type: 'string', description: 'memory per worker (default: the GPU’s memory; on cpu 80% of this machine, as workers assume)' },
    efficiency: { type: 'string', description: 'override efficiencies: 0.5 for every phase, or forward=0.5,recompute=..,inputGrad=..,weightGrad=..' },
    'weight-copies': { type: 'string', description: 'what if each frozen weight were held N times per worker, shared by its sessions (issue 9 aims at 1; default: today’s per-session copies)' },
    calibration: { type: 'string', description: 'calibration file of this machine (default: $PROPIPE_CALIBRATION or ~/.cache/propipe/calibration.json)' },
    calibrate: { type: 'boolean', description: 'measure this machine (about a minute) and write the calibration file; with --model, on blocks of that model’s shape and the run’s type (more accurate for it)' },
    json: { type: 'boolean', description: 'print the plan as one JSON document' },
  },
  async run(f) {
    if (f.bool('calibrate')) {
      const file = f.str('calibration') ?? defaultCalibrationFile();
      const c = await calibrate({ threads: f.int('threads', 0), ...(f.has('model') || f.has('config') ? probeOf(loadPlanRun(f)) : {}) });
      writeCalibration(file, c);
      if (f.bool('json')) console.log(JSON.stringify({ file, ...c }, null, 2));
      else console.log(`wrote ${file}: MatMul ${(c.matmul_flops / 1e9).toFixed(0)} GFLOP/s, element-wise ${(c.bandwidth / 1e9).toFixed(1)} GB/s (exp/sigmoid ${((c.math_bandwidth ?? 0) / 1e9).toFixed(1)} GB/s), efficiency forward ${c.efficiency.forward.toFixed(2)}, input-grad ${c.efficiency.inputGrad.toFixed(2)}, weight-grad ${c.efficiency.weightGrad.toFixed(2)}`);
      return;
    }
    const run = loadPlanRun(f);
    const frozenDtype = resolveFrozenDtype(run.frozen_dtype, readModelConfig(run.model).raw);
    const schedule = f.str('schedule') ?? '1f1b';
    if (!isScheduleKind(schedule)) throw new UsageError(`--schedule must be one of ${SCHEDULE_KINDS.join(', ')}, got '${schedule}'`);
    const workers = f.int('workers', 1);
    if (workers < 1) throw new UsageError('--workers must be at least 1');
    const microBatches = f.has('micro-batches') ? f.int('micro-batches') : run.gradient_accumulation_steps;
    if (microBatches < 1) throw new UsageError('--micro-batches must be at least 1');
    let runtime: RuntimeFactors | undefined;
    if (f.has('weight-copies')) {
      const n = f.num('weight-copies');
      if (!(n > 0)) throw new UsageError('--weight-copies must be a positive number');
      runtime = { ...RUNTIME, sharedWeightCopies: n };
    }
    const req = runRequest(run, { device: device(f), workers, microBatches, schedule, frozenDtype, runtime });
    const report = planRun(req);
    const canQuantize = run.train_type !== 'full';
    const alts = alternatives(req, canQuantize);
    const given = givenRunFlags(f);
    const command = (a: Alternative) => launchCommand(a.request, given, changesOf(a, req));
    if (f.bool('json')) {
      console.log(JSON.stringify({ ...report, device_profile: req.device, launch: report.fits ? launchCommand(req, given, {}) : null, alternatives: alts.map((a) => ({ change: a.change, workers: a.request.workers, fits: a.report.fits, launch: command(a), stages: a.report.stages.map((s) => ({ stage: s.stage, tokens_per_second: s.tokens_per_second, max_memory_bytes: Math.max(...s.ranks.map((k) => k.memory_bytes)) })) })) }, null, 2));
      return;
    }
    console.log(formatReport(report));
    console.log(`device: ${req.device.source}`);
    if (report.fits) console.log(`\nlaunch: ${launchCommand(req, given, {})}`);
    console.log(`\n${formatAlternatives(alts, command, report.fits)}`);
  },
};
