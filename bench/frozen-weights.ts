// How ONNX Runtime (Node binding) can hold one frozen weight shared by several sessions: each option
// runs in a child process of its own so that VmHWM is its own. Prints one JSON document.
//   npm run bench:frozen-weights -- [--out 2816] [--in 1024] [--rows 256] [--sessions 2] [--reps 5]
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { Graph } from '../model/graph/graph.ts';
import { ortSessionOptions } from '../model/graph/session.ts';
import { serialize } from '../model/graph/serialize.ts';
import { f32ToF16 } from '../model/hf/half.ts';
import { procMemory } from '../common/proc-memory.ts';
import { Flags, hostInfo, info, median, Rng, round, timeRuns } from './common.ts';

const OPTIONS = {
  /** Today's layout: initializer through externalData, MatMul(x, Transpose(W)). */
  'initializer': { feed: false, prepack: true, dtype: 'float32' },
  'initializer-no-arena': { feed: false, prepack: true, dtype: 'float32', noArena: true },
  'initializer-no-prepack': { feed: false, prepack: false, dtype: 'float32' },
  /** The weight is a graph input fed from one buffer every run. */
  'input': { feed: true, prepack: true, dtype: 'float32' },
  'input-no-arena': { feed: true, prepack: true, dtype: 'float32', noArena: true },
  /** Held as Wᵀ [in, out], so MatMul takes it as is. */
  'input-pretransposed': { feed: true, prepack: true, dtype: 'float32', noArena: true, pretransposed: true },
  'input-fp16-cast': { feed: true, prepack: true, dtype: 'float16' },
  'input-fp16-cast-no-arena': { feed: true, prepack: true, dtype: 'float16', noArena: true },
} as const;
type Option = keyof typeof OPTIONS;

type Spec = { feed: boolean; prepack: boolean; dtype: 'float32' | 'float16'; noArena?: boolean; pretransposed?: boolean };

function graphFor(o: Spec, out: number, inp: number, w: Float32Array | Uint16Array): Graph {
  const g = new Graph('frozen');
  const x = g.input('x', 'float32', ['rows', inp]);
  const wv = o.feed ? g.input('w', o.dtype, o.pretransposed ? [inp, out] : [out, inp]) : g.initializer('w', 'float32', [out, inp], w);
  const wf = o.dtype === 'float32' ? wv : g.op('Cast', [wv], { to: 1 });
  const y = g.op('MatMul', [x, o.pretransposed ? wf : g.op('Transpose', [wf], { perm: [1, 0] })]);
  g.output(g.rename(y, 'y'));
  return g;
}

async function child(name: Option, f: Flags): Promise<void> {
  const o: Spec = OPTIONS[name];
  const out = f.int('out', 2816), inp = f.int('in', 1024), rows = f.int('rows', 256), sessions = f.int('sessions', 2), reps = f.int('reps', 5);
  const rng = new Rng(1);
  const w32 = rng.uniformArray(out * inp, 0.02);
  const w = o.dtype === 'float16' ? f32ToF16(w32) : w32;
  const weightBytes = w.byteLength;
  const before = procMemory();
  const opts = ortSessionOptions({ threads: 2 });
  if (o.noArena) opts.enableCpuMemArena = false;
  if (!o.prepack) opts.extra = { session: { ...(opts.extra as { session: object }).session, disable_prepacking: '1' } };
  const list: ort.InferenceSession[] = [];
  for (let s = 0; s < sessions; s++) {
    const { bytes, externalData } = serialize(graphFor(o, out, inp, w32));
    list.push(await ort.InferenceSession.create(bytes, { ...opts, externalData }));
  }
  const afterCreate = procMemory();
  const feeds: Record<string, ort.Tensor> = { x: new ort.Tensor('float32', rng.uniformArray(rows * inp, 1), [rows, inp]) };
  if (o.feed) feeds.w = new ort.Tensor(o.dtype as 'float32', w as Float32Array, o.pretransposed ? [inp, out] : [out, inp]);
  const times = await timeRuns(async () => { for (const s of list) await s.run(feeds); }, 1, reps);
  const after = procMemory();
  for (const s of list) await s.release();
  process.stdout.write(JSON.stringify({
    option: name, weight_mb: round(weightBytes / 1e6, 1), sessions, rows,
    rss_before_mb: round(before.rssBytes / 1e6, 1), rss_after_create_mb: round(afterCreate.rssBytes / 1e6, 1),
    hwm_mb: round(after.hwmBytes / 1e6, 1), added_per_session_mb: round((afterCreate.rssBytes - before.rssBytes) / sessions / 1e6, 1),
    ms_per_run: round(median(times) / sessions, 2),
  }));
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') return child(argv[1] as Option, new Flags(argv.slice(2)));
  const f = new Flags(argv);
  f.check(['out', 'in', 'rows', 'sessions', 'reps']);
  const results = [];
  for (const name of Object.keys(OPTIONS) as Option[]) {
    info(`option ${name}`);
    const text = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', name, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    results.push(JSON.parse(text));
  }
  console.log(JSON.stringify({ host: hostInfo(2), results }, null, 2));
}

await main();
