// report.html: one self-contained page (Chart.js and the drawing script inlined, the data embedded as
// JSON), so it opens from disk or as a CI artifact with no network.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { ChartSpec } from './charts.ts';
import type { RunData } from './run-data.ts';

export interface Table {
  title: string;
  note?: string;
  head: string[];
  rows: (string | number)[][];
}

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
/** JSON inside <script>: no "</script>" can end it early. */
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');
const fmt = (x: unknown, digits = 4) => (typeof x === 'number' && Number.isFinite(x) ? String(Number(x.toPrecision(digits))) : '–');

function chartJs(): string {
  const dist = path.dirname(createRequire(import.meta.url).resolve('chart.js'));
  // The source map comment would make developer tools fetch a file that is not there.
  return fs.readFileSync(path.join(dist, 'chart.umd.min.js'), 'utf8').replace(/\/\/# sourceMappingURL=.*$/m, '');
}

/** `columns` > 1 splits the rows over side-by-side tables (a long key/value list stays short). */
function table(t: Table, columns = 1): string {
  const per = Math.ceil(t.rows.length / columns);
  const parts = Array.from({ length: columns }, (_, i) => t.rows.slice(i * per, (i + 1) * per)).filter((rows) => rows.length);
  const one = (rows: Table['rows']) => `<table><thead><tr>${t.head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
  return `<section><h2>${esc(t.title)}</h2>${t.note ? `<p class="note">${esc(t.note)}</p>` : ''}<div class="cols">${parts.map(one).join('')}</div></section>`;
}

export function summaryTable(runs: RunData[]): Table {
  return {
    title: 'Runs',
    head: ['run', 'workers', 'steps', 'stages (blocks trained)', 'final train loss', 'best validation loss', 'tokens/s', 'peak RSS MB', 'early stops', 'recoveries'],
    rows: runs.map((r) => {
      const last = r.steps[r.steps.length - 1];
      const best = r.evals.length ? Math.min(...r.evals.map((e) => e.loss)) : null;
      const tps = (r.result?.tokensPerSec as number | undefined) ?? r.steps.reduce((s, x) => s + (x.tokensPerSec ?? 0), 0) / r.steps.length;
      const rss = r.steps.reduce((m, s) => Math.max(m, (s.rss ?? []).reduce((a, b) => a + b, 0)), 0);
      return [r.name, r.workers || 'one process', last.step, r.stages.map((s, i) => `${i + 1}: ${s.join(',')}`).join('  '), fmt(last.loss), fmt(best), Math.round(tps), rss ? Math.round(rss / 2 ** 20) : '–', r.earlyStops.length, r.recoveries.length];
    }),
  };
}

/** The final model's scores on eval_tasks, or null when no run had any. */
export function evalTasksTable(runs: RunData[]): Table | null {
  const rows = runs.flatMap((r) => r.evalTasks.map((e) => [r.name, e.task, e.split, e.shots, `${(100 * e.accuracy).toFixed(1)}%`, `${e.correct}/${e.questions}`]));
  return rows.length ? { title: 'Final evaluation (eval_tasks)', head: ['run', 'task', 'split', 'shots', 'accuracy', 'correct'], rows } : null;
}

/** Every config key, one column per run; rows where runs differ come first. */
export function configTable(runs: RunData[]): Table {
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r.config ?? {})))];
  const value = (r: RunData, k: string) => (r.config && r.config[k] !== undefined ? (typeof r.config[k] === 'object' ? JSON.stringify(r.config[k]) : String(r.config[k])) : '–');
  const differs = (k: string) => new Set(runs.map((r) => value(r, k))).size > 1;
  const ordered = [...keys.filter(differs), ...keys.filter((k) => !differs(k))];
  return { title: 'Run config', note: runs.length > 1 ? 'Keys whose values differ between the runs come first.' : undefined, head: ['key', ...runs.map((r) => r.name)], rows: ordered.map((k) => [k, ...runs.map((r) => value(r, k))]) };
}

export function renderPage(title: string, runs: RunData[], charts: ChartSpec[], tables: Table[]): string {
  const browser = fs.readFileSync(path.join(import.meta.dirname, 'browser.js'), 'utf8');
  const sections = charts.map((c) => `<section class="chart"><h2>${esc(c.title)}</h2><p class="note">${esc(c.note)}</p><div class="canvas"><canvas id="chart-${esc(c.id)}"></canvas></div></section>`).join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 0 0 2px; }
.meta, .note { color: #666; margin: 0 0 8px; font-size: 12px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 12px 14px; margin-bottom: 16px; overflow-x: auto; }
.canvas { position: relative; height: 300px; }
.many .canvas { height: 420px; }
table { border-collapse: collapse; font-size: 12px; } th, td { border-bottom: 1px solid #eee; padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
th { color: #555; font-weight: 600; }
.cols { display: flex; gap: 32px; flex-wrap: wrap; align-items: flex-start; }
</style></head>
<body>
<h1>${esc(title)}</h1>
<p class="meta">${runs.map((r) => esc(r.dir)).join(' · ')} — written ${esc(new Date().toISOString())} by propipe report</p>
${tables.map((t) => table(t)).join('\n')}
<div class="grid${runs.length > 2 ? ' many' : ''}">
${sections}
</div>
${table(configTable(runs), runs.length === 1 ? 3 : 1)}
<script id="propipe-data" type="application/json">${scriptJson({ charts })}</script>
<script>${chartJs()}</script>
<script>${browser}</script>
</body></html>
`;
}
