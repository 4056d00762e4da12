// The report's charts as Chart.js configurations (plain JSON, drawn by the page's script): loss with
// stage boundaries and early stops, learning rate per block, gradient norm and clipping, tokens/s,
// rank busy/idle and memory, and a pipeline timeline. Several runs overlay in one chart each.
import type { RunData } from './run-data.ts';

export interface Mark {
  x: number;
  label: string;
  color: string;
  dash?: boolean;
}

export interface ChartSpec {
  id: string;
  title: string;
  /** What to read in it, under the title. */
  note: string;
  config: Record<string, unknown>;
  /** Vertical lines drawn by the page's marks plugin. */
  marks?: Mark[];
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
const KINDS: [RegExp, string, string][] = [
  [/^F\d/, 'forward', '#4e79a7'],
  [/^B\d/, 'backward', '#f28e2b'],
  [/^W\d/, 'weight gradient', '#e15759'],
  [/^send/, 'send', '#59a14f'],
  [/^recv/, 'receive (waiting)', '#bab0ac'],
  [/^optimizer/, 'optimizer', '#b07aa1'],
];

const color = (i: number) => PALETTE[i % PALETTE.length];
const lineDefaults = { animation: false, responsive: true, maintainAspectRatio: false, interaction: { mode: 'nearest', intersect: false }, plugins: { legend: { position: 'bottom', labels: { boxWidth: 12, font: { size: 11 } } } } };

function line(label: string, points: { x: number; y: number }[], c: string, extra: Record<string, unknown> = {}) {
  return { label, data: points, borderColor: c, backgroundColor: c, borderWidth: 1.5, pointRadius: points.length > 60 ? 0 : 2, tension: 0, ...extra };
}

/** Step charts end at the last step (not at the next round number). */
function lineChart(datasets: { data: { x: number }[] }[], y: Record<string, unknown>): Record<string, unknown> {
  const last = Math.max(...datasets.flatMap((d) => d.data.map((p) => p.x)));
  return { type: 'line', data: { datasets }, options: { ...lineDefaults, scales: { x: { type: 'linear', min: 0, max: last, title: { display: true, text: 'optimizer step' } }, y } } };
}

/** Run names in legends only when there are several runs. */
function prefix(runs: RunData[], r: RunData): string {
  return runs.length > 1 ? `${r.name}: ` : '';
}

function lossChart(runs: RunData[]): ChartSpec {
  const datasets = runs.flatMap((r, i) => {
    const c = runs.length > 1 ? color(i) : color(0);
    const train = line(`${prefix(runs, r)}train loss`, r.steps.map((s) => ({ x: s.step, y: s.loss })), c);
    const val = line(`${prefix(runs, r)}validation loss`, r.evals.map((e) => ({ x: e.step, y: e.loss })), runs.length > 1 ? c : color(1), { borderDash: [5, 3], pointRadius: 3 });
    return r.evals.length ? [train, val] : [train];
  });
  const marks = runs.flatMap((r, i) => [
    // With several runs, the first stage's start (step 0 of every run) would only stack labels.
    ...r.stageStarts.filter((s) => runs.length === 1 || s.step > 0).map((s) => ({ x: s.step, label: `${prefix(runs, r)}stage ${s.stage + 1}: blocks ${(r.stages[s.stage] ?? s.layers).join(',')}`, color: runs.length > 1 ? color(i) : '#555', dash: true })),
    ...r.earlyStops.map((e) => ({ x: e.step, label: `${prefix(runs, r)}early stop (stage ${e.stage + 1})`, color: '#d62728' })),
  ]);
  return { id: 'loss', title: 'Loss', note: 'Mean token loss per optimizer step and on the validation set; dashed lines mark stage starts (with the blocks each stage trains), red lines early stops.', config: lineChart(datasets, { title: { display: true, text: 'loss' } }), marks };
}

function lrChart(runs: RunData[]): ChartSpec | null {
  const datasets = runs.flatMap((r, i) => {
    const blocks = [...new Set(r.steps.flatMap((s) => Object.keys(s.lrBlocks ?? {})))].sort((a, b) => Number(a) - Number(b));
    // One color per block for one run; one color per run (blocks told apart by dashes) for several.
    return blocks.map((b, j) =>
      line(`${prefix(runs, r)}block ${b}`, r.steps.filter((s) => s.lrBlocks?.[b] !== undefined).map((s) => ({ x: s.step, y: s.lrBlocks![b] })), runs.length > 1 ? color(i) : color(j), runs.length > 1 && j > 0 ? { borderDash: [2 + 2 * j, 3] } : {}),
    );
  });
  if (!datasets.length) return null;
  return { id: 'lr', title: 'Learning rate per block', note: 'The rate each trained block gets: layer-wise from the bottom rate to the top rate, times each stage’s warmup and cosine decay.', config: lineChart(datasets, { title: { display: true, text: 'learning rate' } }) };
}

function gradChart(runs: RunData[]): ChartSpec | null {
  const datasets = runs.flatMap((r, i) => {
    const pts = r.steps.filter((s) => s.gradNorm !== undefined);
    if (!pts.length) return [];
    const c = color(i);
    const out = [line(`${prefix(runs, r)}gradient norm`, pts.map((s) => ({ x: s.step, y: s.gradNorm! })), c)];
    const clipped = pts.filter((s) => (s.clipScale ?? 1) < 1);
    if (clipped.length) out.push(line(`${prefix(runs, r)}clipped steps`, clipped.map((s) => ({ x: s.step, y: s.gradNorm! })), '#d62728', { showLine: false, pointRadius: 4, pointStyle: 'triangle' }));
    const max = pts.find((s) => s.maxGradNorm !== undefined)?.maxGradNorm;
    if (max !== undefined && max > 0) out.push(line(`${prefix(runs, r)}max_grad_norm ${max}`, [{ x: pts[0].step, y: max }, { x: pts[pts.length - 1].step, y: max }], '#999', { borderDash: [2, 2], pointRadius: 0 }));
    return out;
  });
  if (!datasets.length) return null;
  return { id: 'grad', title: 'Gradient norm and clipping', note: 'Global gradient norm over every trainable tensor (all ranks), the clipping threshold, and the steps it clipped.', config: lineChart(datasets, { type: 'logarithmic', title: { display: true, text: 'global L2 norm' } }) };
}

function throughputChart(runs: RunData[]): ChartSpec | null {
  const datasets = runs.flatMap((r, i) => {
    const pts = r.steps.filter((s) => s.tokensPerSec !== undefined).map((s) => ({ x: s.step, y: s.tokensPerSec! }));
    return pts.length ? [line(`${prefix(runs, r)}tokens/s`, pts, color(i))] : [];
  });
  if (!datasets.length) return null;
  return { id: 'throughput', title: 'Throughput', note: 'Target tokens per second of each optimizer step (wall time of the step; evaluations excluded).', config: lineChart(datasets, { beginAtZero: true, title: { display: true, text: 'tokens/s' } }) };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

function ranksChart(runs: RunData[]): ChartSpec | null {
  const rows = runs.flatMap((r) => {
    const pts = r.steps.filter((s) => s.busy && s.seconds);
    if (!pts.length) return [];
    return pts[0].busy!.map((_, rank) => {
      const busy = mean(pts.map((s) => s.busy![rank] ?? 0));
      return { label: `${prefix(runs, r)}rank ${rank}`, busy: busy * 1000, idle: Math.max(0, mean(pts.map((s) => s.seconds!)) - busy) * 1000 };
    });
  });
  if (!rows.length) return null;
  const labels = rows.map((x) => x.label);
  return {
    id: 'ranks',
    title: 'Rank busy and idle time per step',
    note: 'Mean over the run: compute (forward, backward) against the rest of the step (waiting on neighbours, transfers, the barrier, the optimizer).',
    config: {
      type: 'bar',
      data: { labels, datasets: [{ label: 'busy (ms)', data: rows.map((x) => x.busy), backgroundColor: '#4e79a7' }, { label: 'idle (ms)', data: rows.map((x) => x.idle), backgroundColor: '#bab0ac' }] },
      options: { ...lineDefaults, interaction: { mode: 'index' }, scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: 'ms per step' } } } },
    },
  };
}

function memoryChart(runs: RunData[]): ChartSpec | null {
  const rows = runs.flatMap((r) => {
    const pts = r.steps.filter((s) => s.rss?.length);
    const perRank = pts.length ? pts[0].rss!.map((_, rank) => Math.max(...pts.map((s) => s.rss![rank] ?? 0))) : ((r.result?.peakRssPerRank as number[] | undefined) ?? []);
    return perRank.map((bytes, rank) => ({ label: `${prefix(runs, r)}${r.workers > 0 ? `rank ${rank}` : 'process'}`, mb: bytes / 2 ** 20 }));
  });
  if (!rows.length) return null;
  return {
    id: 'memory',
    title: 'Peak memory per rank',
    note: 'Largest resident set size each process reported at a step barrier.',
    config: { type: 'bar', data: { labels: rows.map((x) => x.label), datasets: [{ label: 'peak RSS (MB)', data: rows.map((x) => x.mb), backgroundColor: '#59a14f' }] }, options: { ...lineDefaults, scales: { y: { beginAtZero: true, title: { display: true, text: 'MB' } } } } },
  };
}

function timelineChart(r: RunData, runs: RunData[]): ChartSpec | null {
  const { spans, steps } = r.timeline;
  if (!spans.length) return null;
  const ranks = [...new Set(spans.map((s) => s.rank))].sort((a, b) => a - b);
  const labels = ranks.map((k) => `rank ${k}`);
  const datasets = KINDS.map(([re, label, c]) => ({
    label,
    data: spans.filter((s) => re.test(s.name)).map((s) => ({ x: [s.start, s.end], y: `rank ${s.rank}`, name: s.name })),
    backgroundColor: c,
    borderColor: '#fff',
    borderWidth: 0.5,
    grouped: false,
    barPercentage: 0.8,
    categoryPercentage: 1,
  })).filter((d) => d.data.length);
  const name = runs.length > 1 ? ` (${r.name})` : '';
  return {
    id: `timeline-${runs.indexOf(r)}`,
    title: `Pipeline timeline${name}, steps ${steps[0]}–${steps[steps.length - 1]}`,
    note: 'Each rank’s forward (F<micro-batch>), backward, send and receive spans from trace.json; white gaps are the pipeline bubble (the optimizer and the barrier fall between steps).',
    config: {
      type: 'bar',
      data: { labels, datasets },
      options: { ...lineDefaults, indexAxis: 'y', interaction: { mode: 'nearest', intersect: true }, scales: { x: { type: 'linear', min: 0, title: { display: true, text: 'ms' } }, y: { type: 'category', labels } } },
    },
  };
}

export function buildCharts(runs: RunData[]): ChartSpec[] {
  const charts = [lossChart(runs), lrChart(runs), gradChart(runs), throughputChart(runs), ranksChart(runs), memoryChart(runs), ...runs.map((r) => timelineChart(r, runs))];
  return charts.filter((c): c is ChartSpec => c !== null);
}
