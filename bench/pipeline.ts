// The pipeline for real, on this machine: short LLaMA Pro jobs launched as nats-server + coordinator +
// P worker processes (1F1B), read back from metrics.jsonl and trace.json:
//   1. P = 1..4 workers × M micro-batches: steady-state tokens/s, the measured bubble fraction next to
//      the theoretical (P-1)/(M+P-1);
//   2. the freeze-aware partition against one that ignores the mask (`--ignore-mask`), on a job whose
//      only trainable block is at the top;
//   3. how much of the step time transfers take when sends overlap compute (send/recv spans per rank).
// Prints one JSON document to stdout; progress goes to stderr.
//
//   node --import tsx bench/pipeline.ts [--workers 1,2,3,4] [--micro 1,2,4,8] [--steps 6] [--skip 2] [--batch 4] [--threads 1]
//        [--new-blocks 4] [--compare-workers 2,3] [--compare-micro 8] [--compare-steps 10] [--compare-repeats 2]
//        [--compare-new-blocks 1] [--overlap-steps 5] [--only zb|overlap|stages] [--quick]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { launch } from '../supervisor/launch.ts';
import { createRandomModel } from '../model/hf/init.ts';
import { Rng } from '../common/rng.ts';
import { isMain } from './common.ts';
import { roles, schedule, simulate, type ScheduleKind } from '../recipe/schedule.ts';
import { parseRunConfig } from '../recipe/run-config.ts';
import { compareZeroBubble } from './pipeline-zb.ts';
import { overlapOnLargeModel } from './pipeline-overlap.ts';
import { freezeAwareByStage } from './pipeline-stages.ts';
import { isCompute, readMetrics, readTrace, type TraceEvent } from './pipeline-records.ts';

const MODEL = { layers: 8, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 1024 };
const SEQ = 128;

interface RankTime {
  rank: number;
  blocks: string;
  /** This rank's share of the planner's cost (partition.ts) and of the measured compute. */
  plannedCostShare: number;
  computeShare: number;
  /** Medians per steady step, seconds. */
  compute: number;
  sendBlocked: number;
  recvWait: number;
  /** Waiting for a frame whose sender had already started sending it: the transfer on the critical path. */
  exposedTransfer: number;
  exposedTransferFrac: number;
  /** Fractions of the step window (first span start to last span end over every rank). */
  computeFrac: number;
  sendFrac: number;
  recvFrac: number;
}

export interface JobResult {
  schedule: ScheduleKind;
  workers: number;
  microBatches: number;
  ignoreMask: boolean;
  partition: string[];
  steps: number;
  steadySteps: number;
  /** Target tokens per second, median over the steady steps (the first `skip` steps are warm-up). */
  tokensPerSec: number;
  /** Coordinator step time (barrier to barrier: schedule, optimizer, report), median over steady steps. */
  stepSeconds: number;
  /** Every step's coordinator time and Σ busy over ranks (the first step included). */
  perStep: { seconds: number; busy: number }[];
  /** 1 - Σ busy / (P × step time), with the coordinator's step time. */
  bubble: number;
  /** The same over the schedule window alone (first to last F/B/send/recv span of the step). */
  bubbleSchedule: number;
  /** (P-1)/(M+P-1): equal stages, instant transfers. */
  bubbleTheory: number;
  /** Median seconds per micro-batch per rank: forward, backward (B: the whole backward outside zb1), W. */
  perMicroBatch: { forward: number[]; backwardInput: number[]; backwardWeight: number[] };
  /** Simulated schedule with this run's measured F and B times per rank (still instant transfers). */
  bubbleSimulated: number;
  /** Activation + gradient bytes crossing each link per step, and one activation frame. */
  bytesPerStepPerLink: number;
  frameBytes: number;
  /** Frames a rank waited for: median ms from the start of the send to the receiver holding the tensor. */
  frameLatencyMs: number | null;
  framesWaitedFor: number;
  ranks: RankTime[];
  /** Launch to the end of the first step, the first step itself, and the last step to exit. */
  startupSeconds: number;
  firstStepSeconds: number;
  tailSeconds: number;
  wallSeconds: number;
}

const median = (xs: number[], s = [...xs].sort((a, b) => a - b)) => (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2);
const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0), round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

export interface JobOptions { root: string; model: string; dataset: string; name: string; workers: number; microBatches: number; steps: number; skip: number; batch: number; threads: number; newBlocks: number; groups: number; ignoreMask: boolean; schedule?: ScheduleKind; run?: Record<string, unknown>; env?: Record<string, string> }

export async function runJob(o: JobOptions): Promise<JobResult> {
  const kind = o.schedule ?? '1f1b';
  const out = path.join(o.root, o.name);
  const file = path.join(o.root, `${o.name}.yaml`);
  const run = {
    model: o.model,
    dataset: o.dataset,
    output_dir: out,
    train_type: 'llamapro',
    llamapro_new_blocks: o.newBlocks,
    llamapro_groups: o.groups,
    stage_order: 'none',
    steps_per_stage: o.steps,
    per_device_train_batch_size: o.batch,
    gradient_accumulation_steps: o.microBatches,
    max_length: SEQ,
    learning_rate: 1e-4,
    logging_steps: 1,
    seed: 3,
    threads: o.threads,
    ...o.run,
  };
  fs.writeFileSync(file, YAML.stringify(run));
  const slack = parseRunConfig(run, file).pipeline_slack;
  const lines: string[] = [];
  let partition: string[] = [];
  let planned: number[] = [];
  const t0 = performance.now();
  const launchedAt = Date.now();
  const failed = (why: string) => new Error(`${o.name} failed: ${why}\n${lines.slice(-30).join('\n')}`);
  const code = await launch({
    workers: o.workers,
    coordinatorArgs: ['--config', file, '--schedule', kind, '--micro-batches', String(o.microBatches), ...(o.ignoreMask ? ['--ignore-mask'] : [])],
    quiet: true,
    env: o.env,
    onLine: (tag, line) => {
      lines.push(`${tag} ${line}`);
      if (tag === 'coord' && line.includes('partition planned')) {
        const rec = JSON.parse(line.slice(line.indexOf('{'))) as { partition: { blocks: string; cost: number }[] };
        partition = rec.partition.map((p) => p.blocks);
        planned = rec.partition.map((p) => p.cost);
      }
    },
  }).catch((err: Error) => {
    throw failed(err.message);
  });
  const wallSeconds = (performance.now() - t0) / 1000, endedAt = Date.now();
  if (code !== 0) throw failed(`exit code ${code}`);

  const P = o.workers;
  const M = o.microBatches;
  const steps = readMetrics(out);
  const steady = steps.filter((s) => s.step > o.skip);
  if (steady.length === 0) throw failed(`no steps after the ${o.skip} skipped`);
  const tokensPerSec = median(steady.map((s) => s.tokens / s.seconds));
  const bubble = median(steady.map((s) => 1 - s.busy.reduce((a, b) => a + b, 0) / (P * s.seconds)));

  // The schedule window of each step from the trace, and each rank's time in compute, send and receive.
  const trace = readTrace(out);
  const windows: number[] = [];
  const per = Array.from({ length: P }, () => ({ compute: [] as number[], send: [] as number[], recv: [] as number[], exposed: [] as number[], f: [] as number[], b: [] as number[], w: [] as number[] }));
  // A frame a rank waited for: from the moment its sender started sending it to the moment the receiver
  // had it (both clocks are this machine's), i.e. encoding, the wire, reassembly and the mailbox.
  const latencies: number[] = [];
  const busyFrac: number[] = [];
  for (const s of steady) {
    const ev = trace.filter((e) => e.args?.step === s.step);
    if (ev.length === 0) continue;
    const start = Math.min(...ev.map((e) => e.ts));
    const end = Math.max(...ev.map((e) => e.ts + e.dur));
    const window = (end - start) / 1e6;
    windows.push(window);
    let busy = 0;
    for (let r = 0; r < P; r++) {
      const mine = ev.filter((e) => e.tid === r);
      const sum = (pred: (e: TraceEvent) => boolean) => mine.filter(pred).reduce((a, e) => a + e.dur, 0) / 1e6;
      const compute = sum((e) => isCompute(e.name));
      busy += compute;
      per[r].compute.push(compute);
      per[r].send.push(sum((e) => e.name.startsWith('send ')));
      per[r].recv.push(sum((e) => e.name.startsWith('recv ')));
      let exposed = 0;
      for (const rv of mine.filter((e) => e.name.startsWith('recv '))) {
        const what = rv.name.slice(5); // F<mb> from the rank below, B<mb> from the rank above
        const from = what.startsWith('F') ? r - 1 : r + 1;
        const sent = ev.find((e) => e.tid === from && e.name === `send ${what}`);
        if (!sent) continue;
        const end = rv.ts + rv.dur;
        if (sent.ts < end && rv.dur > 0) {
          latencies.push((end - sent.ts) / 1000);
          exposed += (end - Math.max(rv.ts, sent.ts)) / 1e6;
        }
      }
      per[r].exposed.push(exposed);
      per[r].f.push(sum((e) => /^F\d+$/.test(e.name)) / M);
      per[r].b.push(sum((e) => /^(B|teacher F)\d+$/.test(e.name)) / M);
      per[r].w.push(sum((e) => /^W\d+$/.test(e.name)) / M);
    }
    busyFrac.push(busy / (P * window));
  }
  const window = median(windows);
  const ranks: RankTime[] = per.map((p, r) => ({
    rank: r,
    blocks: partition[r] ?? '?',
    plannedCostShare: round((planned[r] ?? 0) / planned.reduce((a, b) => a + b, 0)),
    computeShare: round(median(p.compute) / per.reduce((a, q) => a + median(q.compute), 0)),
    compute: round(median(p.compute), 4),
    sendBlocked: round(median(p.send), 4),
    recvWait: round(median(p.recv), 4),
    exposedTransfer: round(median(p.exposed), 4),
    computeFrac: round(median(p.compute) / window),
    sendFrac: round(median(p.send) / window),
    recvFrac: round(median(p.recv) / window),
    exposedTransferFrac: round(median(p.exposed) / window),
  }));

  // The schedule simulated with the measured per-micro-batch F, B (and W) of each rank (a rank below
  // every trainable block has no B; the last rank's forward is folded into its backward graph).
  const fwd = per.map((p) => median(p.f));
  const bIn = per.map((p) => median(p.b));
  const bW = per.map((p) => median(p.w));
  const rs = roles(bIn.map((b, r) => b + bW[r] > 0));
  const sim = simulate(rs.map((role) => schedule(kind, role, M, slack)), { forward: fwd, backward: bIn.map((b, r) => b + bW[r]), backwardInput: bIn, backwardWeight: bW });

  return {
    schedule: kind,
    workers: P,
    microBatches: M,
    perMicroBatch: { forward: fwd.map((x) => round(x, 4)), backwardInput: bIn.map((x) => round(x, 4)), backwardWeight: bW.map((x) => round(x, 4)) },
    ignoreMask: o.ignoreMask,
    partition,
    steps: steps.length,
    steadySteps: steady.length,
    tokensPerSec: round(tokensPerSec, 1),
    stepSeconds: round(median(steady.map((s) => s.seconds)), 4),
    perStep: steps.map((s) => ({ seconds: round(s.seconds), busy: round(s.busy.reduce((a, b) => a + b, 0)) })),
    bubble: round(bubble),
    bubbleSchedule: round(1 - median(busyFrac)),
    bubbleTheory: round((P - 1) / (M + P - 1)),
    bubbleSimulated: round(sim.bubble),
    bytesPerStepPerLink: P > 1 ? 2 * M * o.batch * SEQ * MODEL.hidden * 4 : 0,
    frameBytes: o.batch * SEQ * MODEL.hidden * 4,
    frameLatencyMs: latencies.length ? round(median(latencies), 2) : null,
    framesWaitedFor: latencies.length,
    ranks,
    startupSeconds: round((steps[0].time - launchedAt) / 1000, 1),
    firstStepSeconds: round(steps[0].seconds, 2),
    tailSeconds: round((endedAt - steps[steps.length - 1].time) / 1000, 1),
    wallSeconds: round(wallSeconds, 1),
  };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const flag = (name: string, def: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < argv.length && !argv[i + 1].startsWith('--') ? argv[i + 1] : def;
  };
  const list = (name: string, def: string) => flag(name, def).split(',').filter(Boolean).map(Number);
  const quick = argv.includes('--quick');
  // `--only zb` runs just the zero-bubble comparison (section 4), `--only overlap` just section 5.
  const only = flag('only', '');
  const workers = list('workers', quick ? '1,2' : '1,2,3,4');
  const micro = list('micro', quick ? '1,4' : '1,2,4,8');
  const steps = Number(flag('steps', '6'));
  const skip = Number(flag('skip', '2'));
  const batch = Number(flag('batch', '4'));
  const threads = Number(flag('threads', '1'));
  const compareWorkers = list('compare-workers', quick ? '2' : '2,3');
  const compareMicro = Number(flag('compare-micro', '8'));
  const compareSteps = Number(flag('compare-steps', '10'));
  const compareRepeats = Number(flag('compare-repeats', quick ? '1' : '2'));
  const newBlocks = Number(flag('new-blocks', '4'));
  const compareNewBlocks = Number(flag('compare-new-blocks', '1'));

  const started = performance.now();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-bench-pipeline-'));
  const model = path.join(root, 'base');
  await createRandomModel(model, { ...MODEL, seed: 1 });
  // Pre-tokenized data: enough examples that no step repeats one.
  const rng = new Rng(7);
  const examples = Math.max(...micro.map((m) => m * steps), compareMicro * compareSteps) * batch;
  const dataset = path.join(root, 'train.jsonl');
  fs.writeFileSync(dataset, Array.from({ length: examples }, () => JSON.stringify({ input_ids: Array.from({ length: SEQ }, () => 3 + rng.nextInt(MODEL.vocab - 3)) })).join('\n') + '\n');
  const log = (s: string) => process.stderr.write(`${s}\n`);
  log(`pipeline bench in ${root}: model ${JSON.stringify(MODEL)}, seq ${SEQ}, micro-batch ${batch}, ${steps} steps per job, ${threads} ORT thread(s) per worker, ${os.cpus().length} cores`);

  // 1. P × M, LLaMA Pro with new blocks interleaved through the stack.
  const grid: JobResult[] = [];
  for (const P of only ? [] : workers) {
    for (const M of micro) {
      const r = await runJob({ root, model, dataset, name: `grid-p${P}-m${M}`, workers: P, microBatches: M, steps, skip, batch, threads, newBlocks, groups: newBlocks, ignoreMask: false });
      grid.push(r);
      log(`P=${P} M=${M}: ${r.tokensPerSec.toFixed(0)} tokens/s, step ${r.stepSeconds.toFixed(3)} s, bubble ${r.bubble.toFixed(3)} (schedule ${r.bubbleSchedule.toFixed(3)}, simulated ${r.bubbleSimulated.toFixed(3)}, theory ${r.bubbleTheory.toFixed(3)}), partition ${r.partition.join(' | ')}, ${r.wallSeconds.toFixed(0)} s wall`);
    }
  }

  // 2. Freeze-aware plan vs one that ignores the mask, on a job whose trainable block(s) sit at the top.
  //    The two plans run alternately (A B A B ...) so drifting load on the machine hits both alike.
  const compare = [];
  for (const P of only ? [] : compareWorkers) {
    const job = { root, model, dataset, workers: P, microBatches: compareMicro, steps: compareSteps, skip, batch, threads, newBlocks: compareNewBlocks, groups: 1 };
    const aware: JobResult[] = [];
    const ignore: JobResult[] = [];
    for (let i = 0; i < compareRepeats; i++) {
      aware.push(await runJob({ ...job, name: `top-p${P}-aware-${i}`, ignoreMask: false }));
      ignore.push(await runJob({ ...job, name: `top-p${P}-ignore-${i}`, ignoreMask: true }));
    }
    const rate = (rs: JobResult[]) => mean(rs.map((r) => r.tokensPerSec));
    const speedup = rate(aware) / rate(ignore);
    compare.push({
      workers: P,
      microBatches: compareMicro,
      freezeAwareTokensPerSec: round(rate(aware), 1),
      ignoreMaskTokensPerSec: round(rate(ignore), 1),
      speedup: round(speedup),
      freezeAware: aware,
      ignoreMask: ignore,
    });
    log(`top-only P=${P} M=${compareMicro}: freeze-aware ${rate(aware).toFixed(0)} tokens/s [${aware[0].partition.join(' | ')}] (${aware.map((r) => r.tokensPerSec.toFixed(0)).join(', ')}) vs ignore-mask ${rate(ignore).toFixed(0)} tokens/s [${ignore[0].partition.join(' | ')}] (${ignore.map((r) => r.tokensPerSec.toFixed(0)).join(', ')}): ×${speedup.toFixed(2)}`);
  }

  // 3. Transfers against the step, per rank, from the grid's largest-M runs.
  const overlap = grid
    .filter((r) => r.workers > 1 && r.microBatches === Math.max(...micro))
    .map((r) => ({ workers: r.workers, microBatches: r.microBatches, stepSeconds: r.stepSeconds, bytesPerStepPerLink: r.bytesPerStepPerLink, frameBytes: r.frameBytes, frameLatencyMs: r.frameLatencyMs, ranks: r.ranks }));

  // 4. ZB-H1 against 1F1B on a full fine-tune and a LLaMA Pro + LoRA job.
  const zeroBubble = only === 'overlap' || only === 'stages' ? null : await compareZeroBubble({ root, model, dataset, skip, batch, threads, quick, log });
  // 5. Transfers behind compute on a model where compute dominates: sessions in the thread vs on the main thread.
  const overlapLarge = only === 'zb' || only === 'stages' ? null : await overlapOnLargeModel({ root, steps: Number(flag('overlap-steps', '5')), skip, batch: 1, repeats: quick ? 1 : 2, log });
  // 6. Freeze-aware against mask-blind per stage of a bottom-up walk, on the large model.
  const byStage = only === 'zb' || only === 'overlap' ? null : await freezeAwareByStage({ root, steps: Number(flag('overlap-steps', '5')), skip, repeats: quick ? 1 : 2, stages: quick ? [2] : [0, 1, 2, 3], log });

  const out = {
    bench: 'pipeline',
    host: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, loadavg: os.loadavg().map((x) => round(x, 2)), node: process.version },
    setup: {
      model: MODEL,
      seq: SEQ,
      microBatchSize: batch,
      stepsPerJob: steps,
      warmupStepsSkipped: skip,
      threadsPerWorker: threads,
      schedule: '1f1b',
      grid: { train_type: 'llamapro', llamapro_new_blocks: newBlocks, llamapro_groups: newBlocks, layers: MODEL.layers + newBlocks, stage_order: 'none' },
      compare: { train_type: 'llamapro', llamapro_new_blocks: compareNewBlocks, llamapro_groups: 1, layers: MODEL.layers + compareNewBlocks, microBatches: compareMicro, stepsPerJob: compareSteps, repeats: compareRepeats },
      notes: [
        `every worker is a separate process with ${threads} ORT intra-op thread(s); this machine has ${os.cpus().length} cores, so with P > ${os.cpus().length} workers processes compete for cores and tokens/s and bubbles at P > ${os.cpus().length} measure CPU sharing as much as the schedule`,
        `tokensPerSec, stepSeconds and the bubbles are medians over the steps after the first ${skip} of each job (session build and ONNX Runtime warm-up take a few runs)`,
        'bubble = 1 - Σ busy / (P × step seconds) with the coordinator step time (includes optimizer and the report barrier); bubbleSchedule uses the trace window of the step (first to last F/B/send/recv span over all ranks)',
        'the job runs as `propipe launch` runs it by default: mutual TLS and a bearer token on every gRPC channel',
        'plannedCostShare is a rank\'s share of the partition planner\'s cost model, computeShare its share of the measured forward/backward time',
        'busy counts forward and backward spans only (the last rank folds its forward into the backward graph); sendBlocked is the time a rank spent inside send (handing frames to HTTP/2; the bytes move while it computes), recvWait the time it waited for a frame (mostly the bubble), exposedTransfer the part of that wait after the sender had started sending the frame (the transfer on the critical path); fractions are of the step window',
      ],
    },
    grid,
    freezeAwareVsIgnoreMask: compare,
    overlap,
    zeroBubble,
    overlapLarge,
    freezeAwareByStage: byStage,
    totalSeconds: round((performance.now() - started) / 1000, 1),
  };
  fs.rmSync(root, { recursive: true, force: true });
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
}

// Other benchmarks import runJob: run only when started as the script.
if (isMain(import.meta.url)) {
  main().catch((err) => {
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    process.exit(1);
  });
}
