// The run report: `train` and `launch` write report.html at the end; it opens in a real browser
// (Debian's headless Chromium) with every chart drawn from real run files, no errors and no network,
// and `propipe report A B` overlays runs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { openInChromium, type PageSeen } from './support/browser.ts';
import { propipe } from './support/cli.ts';
import { makeTiny } from './support/tiny.ts';

const records = (dir: string) => fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
/** The chart specs embedded in the page. */
const embedded = (file: string) => JSON.parse(/<script id="propipe-data" type="application\/json">(.*?)<\/script>/s.exec(fs.readFileSync(file, 'utf8'))![1]);

function assertRendered(seen: PageSeen, ids: string[]): void {
  assert.deepEqual(seen.errors, [], 'the page logged errors');
  assert.deepEqual(seen.requests.filter((u) => !u.startsWith('file://') && !u.startsWith('data:')), [], 'the page made network requests');
  assert.deepEqual(seen.charts.map((c) => c.id), ids);
  assert.equal(seen.drawn, ids.length);
  for (const c of seen.charts) {
    assert.ok(c.points.length > 0 && c.points.every((n) => n > 0), `${c.id}: every dataset has data points (${c.points})`);
    assert.ok(c.inked > 2000, `${c.id}: the canvas is drawn on (${c.inked} pixels)`);
  }
}

test('train and launch write report.html: every chart renders in Chromium; several runs overlay', async () => {
  const t = await makeTiny();
  // Early stopping after one evaluation without a 1.0 improvement: every stage stops early, deterministically.
  const common = ['--model', t.model, '--dataset', t.train, '--val-dataset', t.val, '--train-type', 'llamapro', '--llamapro-new-blocks', '2', '--steps-per-stage', '12', '--eval-steps', '3', '--early-stop-patience', '1', '--early-stop-min-delta', '1', '--learning-rate', '3e-2', '--max-grad-norm', '0.3', '--per-device-train-batch-size', '4', '--save-steps', '4'];
  const single = path.join(t.root, 'single');
  // The final model is also scored on a small multiple-choice file: the report lists the scores.
  const mc = path.join(t.root, 'mc.jsonl');
  fs.writeFileSync(mc, ['alpha beta', 'gamma delta', 'eta theta'].map((q) => JSON.stringify({ question: q, A: 'iota', B: 'kappa', answer: 'A' })).join('\n') + '\n');
  const tr = propipe(['train', ...common, '--eval-tasks', `mc=${mc}`, '--output-dir', single]);
  assert.equal(tr.status, 0, tr.stderr);
  const piped = path.join(t.root, 'piped');
  const la = propipe(['launch', '--workers', '2', '--insecure', '--micro-batches', '2', ...common, '--output-dir', piped]);
  assert.equal(la.status, 0, la.stderr);

  // What the report reads: the run record, stage starts, early stops, checkpoints, per-block LR, ranks.
  for (const dir of [single, piped]) {
    const rs = records(dir);
    assert.equal(rs[0].event, 'run');
    assert.deepEqual(rs[0].stages, [[2], [5]]);
    assert.deepEqual(rs.filter((r) => r.event === 'stage_start').map((r) => [r.stage, r.step]), [[0, 0], [1, 6]]);
    assert.deepEqual(rs.filter((r) => r.event === 'early_stop').map((r) => r.step), [6, 12]);
    assert.ok(rs.some((r) => r.event === 'checkpoint' && r.step === 4));
    const steps = rs.filter((r) => typeof r.loss === 'number' && r.eval_loss === undefined);
    assert.equal(steps.length, 12);
    assert.deepEqual(Object.keys(steps[0].lr_blocks), ['2']);
    assert.deepEqual(Object.keys(steps[11].lr_blocks), ['5']);
    assert.ok(steps.some((s) => s.clip_scale < 1), 'some step was clipped at max_grad_norm 0.3');
    assert.equal(steps[0].rss.length, dir === piped ? 2 : 1);
  }
  assert.match(fs.readFileSync(path.join(single, 'report.html'), 'utf8'), /Final evaluation \(eval_tasks\)<\/h2>.*<td>single<\/td><td>mc<\/td>.*<td>\d+\/3<\/td>/s);
  const loss = embedded(path.join(piped, 'report.html')).charts.find((c: { id: string }) => c.id === 'loss');
  assert.equal(loss.config.options.scales.x.max, 12, 'the step axis ends at the last step (stage_end records carry eval_loss but no step)');
  const marks = loss.marks.map((m: { label: string }) => m.label);
  assert.deepEqual(marks, ['stage 1: blocks 2', 'stage 2: blocks 5', 'early stop (stage 1)', 'early stop (stage 2)']);

  const shot = process.env.PROPIPE_REPORT_SCREENSHOT ?? path.join(t.root, 'report.png');
  const seen = await openInChromium(path.join(piped, 'report.html'), shot);
  assertRendered(seen, ['chart-loss', 'chart-lr', 'chart-grad', 'chart-throughput', 'chart-ranks', 'chart-memory', 'chart-timeline-0']);
  assert.ok(fs.statSync(shot).size > 20_000, 'a screenshot was saved');
  const timeline = seen.charts.find((c) => c.id === 'chart-timeline-0')!;
  for (const kind of ['forward', 'backward', 'send', 'receive (waiting)']) assert.ok(timeline.labels.includes(kind), kind);
  assert.deepEqual(seen.charts.find((c) => c.id === 'chart-lr')!.labels, ['block 2', 'block 5']);

  const both = path.join(t.root, 'both.html');
  const rep = propipe(['report', single, piped, '--out', both]);
  assert.equal(rep.status, 0, rep.stderr);
  const overlay = await openInChromium(both);
  assertRendered(overlay, ['chart-loss', 'chart-lr', 'chart-grad', 'chart-throughput', 'chart-ranks', 'chart-memory', 'chart-timeline-0', 'chart-timeline-1']);
  assert.deepEqual(overlay.charts[0].labels, ['single: train loss', 'single: validation loss', 'piped: train loss', 'piped: validation loss']);
  fs.rmSync(t.root, { recursive: true, force: true });
});

test('report on a directory that is not a run names the problem', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-report-'));
  const r = propipe(['report', dir]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /has no metrics\.jsonl: give the output_dir of a run/);
  const none = propipe(['report']);
  assert.equal(none.status, 2);
  assert.match(none.stderr, /give at least one run directory/);
  fs.rmSync(dir, { recursive: true, force: true });
});
