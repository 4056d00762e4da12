// The study's tables: every cell as mean ± standard deviation over seeds, per method and per value of
// each ablated knob, and a retention-vs-adaptation scatter as a self-contained HTML page.
import { METHODS, ABLATED, ABLATIONS, SEED_ADVICE } from './plan.ts';
import type { Cell, StudyResult } from './run.ts';

export interface Stat {
  mean: number;
  sd: number;
  n: number;
}

export function stat(xs: readonly number[]): Stat {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const sd = n > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, sd, n };
}

export interface Row {
  label: string;
  lr: number;
  cells: Cell[];
  retentionA: Stat;
  accuracyB: Stat;
  pplA: Stat;
  pplB: Stat;
  tokens: Stat;
  tokensPerSec: Stat;
  peakRssMB: Stat;
}

function row(label: string, lr: number, cells: Cell[]): Row {
  return {
    label,
    lr,
    cells,
    retentionA: stat(cells.map((c) => c.accuracyA)),
    accuracyB: stat(cells.map((c) => c.accuracyB)),
    pplA: stat(cells.map((c) => Math.exp(c.lossA))),
    pplB: stat(cells.map((c) => Math.exp(c.lossB))),
    tokens: stat(cells.map((c) => c.tokens)),
    tokensPerSec: stat(cells.map((c) => c.tokensPerSec)),
    peakRssMB: stat(cells.map((c) => c.peakRssMB)),
  };
}

/** One row per method at its chosen learning rate, over every seed. */
export function methodRows(r: StudyResult): Row[] {
  return METHODS.filter((m) => r.chosen[m.name]).map((m) => row(m.label, r.chosen[m.name].lr, r.cells.filter((c) => c.method === m.name && c.variant === '' && c.lr === r.chosen[m.name].lr)));
}

/** Per ablated knob: one row per value (the seed's default is the main method's row). */
export function ablationRows(r: StudyResult): { label: string; rows: Row[] }[] {
  const lr = r.chosen[ABLATED]?.lr;
  if (lr === undefined) return [];
  return ABLATIONS.map((a) => ({
    label: a.label,
    rows: a.values
      .map((v) => {
        const variant = v === SEED_ADVICE[a.knob] ? '' : `${a.knob}=${v}`;
        const label = `${v}${variant ? '' : ' (seed default)'}`;
        return row(label, lr, r.cells.filter((c) => c.method === ABLATED && c.variant === variant && c.lr === lr));
      })
      .filter((x) => x.cells.length > 0),
  })).filter((t) => t.rows.length > 1);
}

const pct = (s: Stat) => `${(100 * s.mean).toFixed(1)} ± ${(100 * s.sd).toFixed(1)}%`;
const num = (s: Stat, d = 2) => `${s.mean.toFixed(d)} ± ${s.sd.toFixed(d)}`;

function table(first: string, rows: Row[]): string[] {
  const head = [first, 'LR', 'A quiz (retention)', 'B quiz', 'A ppl', 'B ppl', 'tokens', 'tokens/s', 'peak RSS MB'];
  return [
    `| ${head.join(' | ')} |`,
    `|${head.map(() => '---').join('|')}|`,
    ...rows.map((x) => `| ${x.label} | ${x.lr.toExponential(1)} | ${pct(x.retentionA)} | ${pct(x.accuracyB)} | ${num(x.pplA)} | ${num(x.pplB)} | ${Math.round(x.tokens.mean).toLocaleString('en-US')} | ${Math.round(x.tokensPerSec.mean)} | ${Math.round(x.peakRssMB.mean)} |`),
  ];
}

export function formatStudy(r: StudyResult): string {
  const b = r.base;
  const lines = [
    `budget ${r.budget.name}: ${r.seeds.length} seed(s), ${r.budget.epochs} epochs of B (${r.budget.bTrain} records) per method; base after pretraining on A: A quiz ${(100 * b.accuracyA).toFixed(1)}%, B quiz ${(100 * b.accuracyB).toFixed(1)}%, A ppl ${Math.exp(b.lossA).toFixed(2)}, B ppl ${Math.exp(b.lossB).toFixed(2)}`,
    '',
    ...table('method', methodRows(r)),
    '',
    'learning-rate sweeps (B dev loss, seed 1): ' + Object.entries(r.chosen).map(([m, c]) => `${m} ${c.sweep.map((s) => `${s.lr.toExponential(1)}→${s.devLossB.toFixed(3)}`).join(' ')}`).join('; '),
  ];
  for (const t of ablationRows(r)) lines.push('', `ablation of staged LLaMA Pro: ${t.label}`, '', ...table(t.label.split(' (')[0], t.rows));
  return lines.join('\n');
}

/** Retention (A quiz) against adaptation (B quiz), one point per run, one colour per method. */
export function scatterHtml(r: StudyResult): string {
  const W = 640;
  const H = 480;
  const pad = 60;
  const colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
  const x = (v: number) => pad + v * (W - 2 * pad);
  const y = (v: number) => H - pad - v * (H - 2 * pad);
  const rows = methodRows(r);
  const marks = rows.flatMap((row, i) => [
    ...row.cells.map((c) => `<circle cx="${x(c.accuracyB).toFixed(1)}" cy="${y(c.accuracyA).toFixed(1)}" r="4" fill="${colors[i % colors.length]}" fill-opacity="0.6"><title>${row.label}, seed ${c.seed}: A ${(100 * c.accuracyA).toFixed(1)}%, B ${(100 * c.accuracyB).toFixed(1)}%</title></circle>`),
    `<circle cx="${x(row.accuracyB.mean).toFixed(1)}" cy="${y(row.retentionA.mean).toFixed(1)}" r="8" fill="none" stroke="${colors[i % colors.length]}" stroke-width="2"/>`,
    `<text x="${W - pad + 10}" y="${pad + 18 * i}" fill="${colors[i % colors.length]}" font-size="12">● ${row.label}</text>`,
  ]);
  const ticks = [0, 0.25, 0.5, 0.75, 1].flatMap((t) => [
    `<line x1="${x(t)}" y1="${y(0)}" x2="${x(t)}" y2="${y(1)}" stroke="#eee"/><text x="${x(t)}" y="${y(0) + 16}" font-size="11" text-anchor="middle">${t * 100}%</text>`,
    `<line x1="${x(0)}" y1="${y(t)}" x2="${x(1)}" y2="${y(t)}" stroke="#eee"/><text x="${x(0) - 8}" y="${y(t) + 4}" font-size="11" text-anchor="end">${t * 100}%</text>`,
  ]);
  const base = `<circle cx="${x(r.base.accuracyB)}" cy="${y(r.base.accuracyA)}" r="6" fill="black"><title>base model</title></circle>`;
  return `<!doctype html><meta charset="utf-8"><title>propipe study: retention vs adaptation</title>
<body style="font-family:sans-serif"><h1>Retention vs adaptation</h1><p>One dot per run (seed), rings at each method's mean; black: the base model. Budget ${r.budget.name}, ${r.seeds.length} seed(s).</p>
<svg width="${W + 300}" height="${H}" xmlns="http://www.w3.org/2000/svg">${ticks.join('')}${base}${marks.join('')}
<text x="${W / 2}" y="${H - 15}" text-anchor="middle" font-size="13">B quiz accuracy (adaptation)</text>
<text x="15" y="${H / 2}" transform="rotate(-90 15 ${H / 2})" text-anchor="middle" font-size="13">A quiz accuracy (retention)</text></svg>
<pre>${formatStudy(r).replace(/&/g, '&amp;').replace(/</g, '&lt;')}</pre></body>`;
}
