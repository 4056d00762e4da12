// `propipe plan`'s text output: per stage, each rank's memory broken down, fits or not, its time, the
// schedule's bubble and tokens/s; then what to launch (or what would fit instead).
import type { Alternative, RunReport } from './estimate.ts';
import type { MemoryBreakdown } from './stage-model.ts';

const gib = (b: number) => (b / 2 ** 30).toFixed(2);
const COLUMNS: [keyof MemoryBreakdown, string][] = [
  ['frozenWeights', 'frozen'],
  ['trainableWeights', 'trainable'],
  ['gradients', 'grads'],
  ['optimizer', 'AdamW'],
  ['activations', 'activations'],
  ['teacher', 'teacher'],
  ['runtime', 'runtime'],
];

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')).join('\n');
}

export function formatReport(r: RunReport): string {
  const out: string[] = [];
  const memoryKind = r.device === 'cpu' ? 'RSS' : 'device memory';
  out.push(`${r.workers} × ${r.device} (${gib(r.memory_limit_bytes)} GiB each), ${r.schedule}, ${r.micro_batches} micro-batches of ${r.batch} × ${r.seq} tokens, frozen weights ${r.quantized ? '4-bit' : r.frozen_dtype}; memory in GiB (${memoryKind})`);
  for (const s of r.stages) {
    out.push('', `stage ${s.stage + 1}/${r.stages.length}: layers [${s.layers.join(',')}] train (${s.trainable_tensors} tensors)`);
    const zb = r.schedule === 'zb1';
    const head = ['rank', 'blocks', ...COLUMNS.map((c) => c[1]), 'total', ...(r.device === 'cpu' ? [] : ['host']), 'fits', 'F ms/mb', ...(zb ? ['B ms/mb', 'W ms/mb'] : ['B ms/mb']), 'busy s/step'];
    const rows = s.ranks.map((k) => [
      String(k.rank),
      `${k.embed ? 'emb+' : ''}${k.blocks}${k.head ? '+head' : ''}`,
      ...COLUMNS.map(([key]) => gib(k.memory[key])),
      gib(k.memory_bytes),
      ...(r.device === 'cpu' ? [] : [gib(k.host_bytes)]),
      k.fits ? 'yes' : 'NO',
      (k.forward_seconds * 1e3).toFixed(1),
      ...(zb ? [k.backward_input_seconds, k.backward_weight_seconds] : [k.backward_seconds]).map((x) => (x * 1e3).toFixed(1)),
      k.step_seconds.toFixed(3),
    ]);
    out.push(table([head, ...rows]));
    if (s.refused) out.push(`does not fit: no split of the blocks fits; the time-balanced split's rank ${s.refused.rank} (blocks ${s.refused.blocks}) needs ${gib(s.refused.bytes)} GiB of ${gib(s.refused.limit)} GiB`);
    out.push(`step ${s.step_seconds.toFixed(3)} s, bubble ${(s.bubble * 100).toFixed(0)} %, ${Math.round(s.tokens_per_second)} tokens/s${s.fits ? '' : ' (if it fitted)'}`);
  }
  out.push('', r.fits ? 'fits: every stage fits every rank.' : 'does NOT fit.');
  return out.join('\n');
}

export function formatAlternatives(alts: readonly Alternative[], command: (a: Alternative) => string, fits: boolean): string {
  if (!alts.length) return fits ? 'No fewer workers fit.' : 'No alternative found that fits (tried more workers, smaller micro-batches, bf16 and 4-bit frozen weights).';
  const rows = alts.map((a) => {
    const worst = Math.max(...a.report.stages.flatMap((s) => s.ranks.map((k) => k.memory_bytes)));
    const tps = Math.min(...a.report.stages.map((s) => s.tokens_per_second));
    return `- ${a.change}: ${a.report.workers} workers, at most ${gib(worst)} GiB per rank, ≥ ${Math.round(tps)} tokens/s\n    ${command(a)}`;
  });
  return [fits ? 'Also fits:' : 'What fits:', ...rows].join('\n');
}
