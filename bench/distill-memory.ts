// What distillation adds to each rank's peak RSS, per rank role and without re-plans or role swaps
// (bench:memory's pipelined processes change ranks at stage transitions, so their VmHWM mixes roles).
// Each case runs in a fresh process: a Rank of LLaMA Pro +2 over the 16-layer model of bench:memory
// (first rank 0..9 + embedding, last rank 10..17 + head, or the whole stack), three micro-batches of
// forward / teacher / backward, with and without distillation; prints VmHWM per case.
//   node --import tsx bench/distill-memory.ts --model DIR --data FILE   (a model from `propipe init-model`,
//   e.g. the one `npm run bench:memory -- --keep` writes; --data: any jsonl the run config accepts)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { parseRunConfig } from '../recipe/run-config.ts';
import { Rank } from '../worker/rank.ts';
import { prepareModel } from '../worker/training-model.ts';
import { Flags, hostInfo, info, isMain, printJson, round } from './common.ts';

const ROLES = { first: 0, last: 1, single: -1 } as const;
type Role = keyof typeof ROLES;

const vmHwmMb = () => Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;

/** One case, in this process: prints its peak in MB. */
async function measure(model: string, data: string, role: Role, distill: boolean): Promise<void> {
  const run = parseRunConfig({ model, dataset: data, output_dir: fs.mkdtempSync('/tmp/propipe-distill-memory-'), train_type: 'llamapro', llamapro_new_blocks: 2, distill_weight: distill ? 0.5 : 0 });
  const m = prepareModel(run);
  const L = m.config.numLayers;
  const cut = Math.floor(L / 2) + 1;
  const partition = role === 'single' ? [{ start: 0, end: L, embed: true, head: true }] : [{ start: 0, end: cut, embed: true, head: false }, { start: cut, end: L, embed: false, head: true }];
  const rank = new Rank(run, m, role === 'last' ? 1 : 0, partition);
  await rank.enterStage(0);
  const [batch, seq, h] = [1, 128, m.config.hiddenSize];
  const ids = BigInt64Array.from({ length: batch * seq }, (_, i) => BigInt((i * 7919) % m.config.vocabSize));
  const hidden = Float32Array.from({ length: batch * seq * h }, (_, i) => Math.sin(i) * 0.5);
  const b = { batch, seq, inputIds: ids, labels: ids, hidden: rank.range.embed ? undefined : hidden };
  for (let i = 0; i < 3; i++) {
    if (!rank.range.head) await rank.program!.forward(b, rank.values);
    const teacherHidden = rank.teacher ? await rank.teacher.forward(b, rank.range.embed ? undefined : hidden) : undefined;
    // The same Batch object as the forward: a rank with a frozen prefix backs up from what its forward kept.
    await rank.program!.backward(rank.range.head ? { ...b, teacherHidden } : b, rank.values, rank.range.head ? { lossScale: 1 / seq } : { outGrad: hidden });
  }
  await rank.release();
  console.log(JSON.stringify({ peakMb: vmHwmMb() }));
}

function main(): void {
  const f = new Flags(process.argv.slice(2));
  f.check(['model', 'data', 'case']);
  const model = f.str('model');
  const data = f.str('data');
  if (!model || !data) throw new Error('give --model DIR (a model from `propipe init-model`) and --data FILE (a jsonl dataset)');
  const one = f.str('case');
  if (one) {
    const [role, distill] = one.split(':');
    void measure(model, data, role as Role, distill === '1');
    return;
  }
  const results = (Object.keys(ROLES) as Role[]).map((role) => {
    const peak = (distill: boolean) => {
      info(`${role} rank, distillation ${distill ? 'on' : 'off'}`);
      const r = spawnSync(process.execPath, ['--import', 'tsx', import.meta.filename, '--model', model, '--data', data, '--case', `${role}:${distill ? 1 : 0}`], { encoding: 'utf8', env: { ...process.env, PROPIPE_LOG_LEVEL: 'warn' } });
      if (r.status !== 0) throw new Error(`case ${role} failed:\n${r.stderr.slice(-2000)}`);
      return JSON.parse(r.stdout.trim().split('\n').pop()!).peakMb as number;
    };
    const plain = peak(false);
    const distill = peak(true);
    return { role, plain_mb: round(plain, 0), distill_mb: round(distill, 0), ratio: round(distill / plain, 3) };
  });
  printJson({ host: hostInfo(0), micro_batch: '1 × 128 tokens', results });
}

if (isMain(import.meta.url)) main();
