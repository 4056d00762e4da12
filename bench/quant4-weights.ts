// How a 4-bit frozen weight is held by several ONNX Runtime sessions of one process (forward, backward,
// teacher): as initializers (the layout before: every session copies codes, scales and zero points, and
// MatMulNBits prepacks B once more) or as graph inputs fed from one host buffer (model/quant/quant4-store.ts).
// Each option runs in a child process of its own so that VmHWM is its own. Prints one JSON document.
//   npm run bench:quant4-weights -- [--out 8192] [--in 4096] [--rows 256] [--reps 5] [--threads 1]
// Times are wall and CPU (user + system) per run: on a shared machine the CPU time is the steadier figure.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { backward } from '../model/autodiff/backward.ts';
import { Graph } from '../model/graph/graph.ts';
import { quantizedFeeds, type Quantized4 } from '../model/graph/matmul-nbits.ts';
import { ortSessionOptions } from '../model/graph/session.ts';
import { serialize } from '../model/graph/serialize.ts';
import { quantize4 } from '../model/quant/quant4.ts';
import { Quant4Weights } from '../model/quant/quant4-store.ts';
import { procMemory } from '../common/proc-memory.ts';
import { Flags, hostInfo, info, median, Rng, round, timeRuns } from './common.ts';

/** 'input-dequantize': the forward as DequantizeLinear + MatMul over the inputs instead of MatMulNBits. */
const OPTIONS = ['initializer', 'input', 'input-dequantize'] as const;
type Option = (typeof OPTIONS)[number];

/**
 * The layout before: MatMulNBits over uint8 initializers, and the gradient's DequantizeLinear over the
 * same bytes as uint4 initializers of their own (per-axis rows). Kept here as the baseline only.
 */
function initializerProduct(g: Graph, x: string, q: Quantized4): string {
  const rows = q.out * q.blocks;
  const codes = g.initializer('w.q4', 'uint8', [q.out, q.blocks, q.blockSize / 2], q.codes);
  const scales = g.initializer('w.q4_scales', 'float32', [rows], q.scales);
  const zp = g.initializer('w.q4_zero_points', 'uint8', [q.out, Math.ceil(q.blocks / 2)], q.zeroPoints);
  const wq = g.op('Reshape', [g.op('DequantizeLinear', [g.initializer('w.rows', 'uint4', [rows, q.blockSize], q.codes), scales, g.initializer('w.rows_zp', 'uint4', [rows], q.zeroPoints)], { axis: 0 }), g.i64([q.out, q.inp])]);
  g.emit({ op: 'Identity', inputs: [wq], outputs: ['w.q4.wq'], attrs: {} });
  return g.op('MatMulNBits', [x, codes, scales, zp], { K: q.inp, N: q.out, bits: 4, block_size: q.blockSize, accuracy_level: 1 }, 'com.microsoft');
}

/** Forward (y = x·Wqᵀ) and backward (dx = dY·Wq, with the forward recomputed) graphs of one weight. */
function graphs(option: Option, store: Quant4Weights, q: Quantized4): { forward: Graph; backward: Graph } {
  const g = new Graph('q4');
  const x = g.input('x', 'float32', ['rows', q.inp]);
  const y = option === 'initializer' ? initializerProduct(g, x, q) : store.matmul(g, x, 'w', q.out, q.inp).y;
  const gb = g.clone('q4_backward');
  g.output(g.rename(y, 'y'));
  const dy = gb.input('dy', 'float32', ['rows', q.out]);
  gb.output(gb.rename(backward(gb, [{ value: y, grad: dy }], [x]).get(x)!, 'dx'));
  return { forward: g, backward: gb };
}

/** Median wall time and mean CPU time (all threads of the process) per run, after one warm-up run. */
async function timed(fn: () => Promise<unknown>, reps: number): Promise<{ wall: number; cpu: number }> {
  await fn();
  const c0 = process.cpuUsage();
  const wall = await timeRuns(fn, 0, reps);
  const c = process.cpuUsage(c0);
  return { wall: round(median(wall), 1), cpu: round((c.user + c.system) / 1000 / reps, 1) };
}

async function child(option: Option, f: Flags): Promise<void> {
  const out = f.int('out', 8192), inp = f.int('in', 4096), rows = f.int('rows', 256), reps = f.int('reps', 5), threads = f.int('threads', 1);
  const rng = new Rng(1);
  const w = rng.uniformArray(out * inp, 0.02);
  const q = quantize4(w, out, inp);
  const store = new Quant4Weights(() => w, q.blockSize, { kernel: option === 'input-dequantize' ? 'dequantize' : 'matmulnbits' });
  const { forward, backward: bwd } = graphs(option, store, q);
  const before = procMemory();
  const opts = ortSessionOptions({ threads });
  // A rank's forward, backward and teacher sessions over the same weight.
  const sessions: ort.InferenceSession[] = [];
  for (const g of [forward, bwd, forward]) {
    const { bytes, externalData } = serialize(g);
    sessions.push(await ort.InferenceSession.create(bytes, { ...opts, externalData }));
  }
  const afterCreate = procMemory();
  const feeds: Record<string, ort.Tensor> = {
    x: new ort.Tensor('float32', rng.uniformArray(rows * inp, 1), [rows, inp]),
    dy: new ort.Tensor('float32', rng.uniformArray(rows * out, 1), [rows, out]),
  };
  if (option !== 'initializer') for (const [n, t] of Object.entries(quantizedFeeds('w', q))) feeds[n] = new ort.Tensor(t.dtype as 'uint8', t.data as Uint8Array, t.shape);
  const pick = (s: ort.InferenceSession) => Object.fromEntries(s.inputNames.map((n) => [n, feeds[n]]));
  const fwd = await timed(() => sessions[0].run(pick(sessions[0])), reps);
  const bwd2 = await timed(() => sessions[1].run(pick(sessions[1])), reps);
  const after = procMemory();
  for (const s of sessions) await s.release();
  const codesBytes = q.codes.byteLength + q.scales.byteLength + q.zeroPoints.byteLength;
  process.stdout.write(JSON.stringify({
    option, weight: [out, inp], rows, codes_mb: round(codesBytes / 1e6, 1), float32_mb: round(w.byteLength / 1e6, 1), sessions: sessions.length,
    rss_added_per_session_mb: round((afterCreate.rssBytes - before.rssBytes) / sessions.length / 1e6, 1),
    rss_after_runs_mb: round(after.rssBytes / 1e6, 1), hwm_mb: round(after.hwmBytes / 1e6, 1),
    forward_ms: fwd.wall, forward_cpu_ms: fwd.cpu, backward_ms: bwd2.wall, backward_cpu_ms: bwd2.cpu,
  }));
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') return child(argv[1] as Option, new Flags(argv.slice(2)));
  const f = new Flags(argv);
  f.check(['out', 'in', 'rows', 'reps', 'threads']);
  const results = [];
  for (const option of OPTIONS) {
    info(`option ${option}`);
    const text = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', option, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    results.push(JSON.parse(text));
  }
  console.log(JSON.stringify({ host: hostInfo(f.int('threads', 1)), results }, null, 2));
}

await main();
