// What a person sees at a terminal (a pseudo-terminal through util-linux `script`): readable log lines
// and the live progress display; piped output and --log-format json stay JSON lines, as before.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { makeTiny, type Tiny } from './support/tiny.ts';

const BIN = path.resolve(import.meta.dirname, '../bin/propipe.mjs');
let t: Tiny;
before(async () => (t = await makeTiny()));
after(() => fs.rmSync(t.root, { recursive: true, force: true }));

const env = () => {
  const e: NodeJS.ProcessEnv = { ...process.env, PROPIPE_LOG_LEVEL: 'info', NO_COLOR: '1' };
  delete e.CI;
  delete e.PROPIPE_LOG_JSON;
  return e;
};
const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
/** The command's terminal output with cursor movements removed and redraws split into lines. */
function atTerminal(args: string[]): { status: number; lines: string[] } {
  const r = spawnSync('script', ['-qec', [process.execPath, BIN, ...args].map(quote).join(' '), '/dev/null'], { encoding: 'utf8', env: env(), input: '', timeout: 180_000 });
  // Every cursor movement starts a new piece: what was drawn between two movements is one screen line.
  const text = r.stdout.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '\n').replace(/\x1b[78]/g, '\n');
  return { status: r.status ?? -1, lines: text.split(/\r?\n|\r/).filter((l) => l.trim()) };
}
const run = (out: string, extra: string[] = []) => ['--model', t.model, '--dataset', t.train, '--val-dataset', t.val, '--output-dir', path.join(t.root, out), '--train-type', 'llamapro', '--llamapro-new-blocks', '2', '--steps-per-stage', '4', '--eval-steps', '2', '--save-steps', '4', '--per-device-train-batch-size', '4', '--logging-steps', '2', ...extra];

test('train at a terminal: one readable line per event and a progress display; piped: JSON lines', () => {
  const tty = atTerminal(['train', ...run('tty')]);
  assert.equal(tty.status, 0, tty.lines.join('\n'));
  assert.deepEqual(tty.lines.filter((l) => l.includes('{"level"')), [], 'no JSON log lines at a terminal');
  const has = (re: RegExp) => assert.ok(tty.lines.some((l) => re.test(l)), `a line matches ${re}:\n${tty.lines.join('\n')}`);
  has(/^\d\d:\d\d:\d\d INFO  coordinator +stage 2\/2: .*starting \(previous stage ended\) stage=1 layers=5 /);
  has(/^\d\d:\d\d:\d\d INFO  coordinator +checkpoint committed dir=.*checkpoint-4 step=4$/);
  has(/^\d\d:\d\d:\d\d INFO  coordinator +eval step=2 stage=0 loss=\d\.\d+ improved=true$/);
  has(/^stage 1\/2 · blocks 2 +█+░* \d\/8 steps +ETA /);
  has(/^stage 2\/2 · blocks 5 +█{24} 8\/8 steps +ETA 0:00$/);
  has(/^ +loss \d\.\d{4} +· +val \d\.\d{4}.* · +lr \d\.\d\de-\d +· +grad \d\.\d+ +· +\d+ tok\/s$/);
  has(/report written: open .*report\.html/);

  // The same command piped: every line a JSON record, as before this display existed.
  const piped = spawnSync(process.execPath, [BIN, 'train', ...run('piped')], { encoding: 'utf8', env: env() });
  assert.equal(piped.status, 0, piped.stderr);
  const lines = piped.stderr.trim().split('\n');
  assert.ok(lines.length > 10);
  for (const l of lines) assert.equal(typeof JSON.parse(l).msg, 'string', l);
  assert.ok(lines.some((l) => JSON.parse(l).msg === 'train'));

  // --log-format json at a terminal gives the same JSON lines; a bad value is a usage error.
  const json = atTerminal(['train', '--log-format', 'json', ...run('json')]);
  assert.equal(json.status, 0);
  const records = json.lines.filter((l) => l.startsWith('{'));
  assert.ok(records.length > 10 && records.every((l) => JSON.parse(l).level === 30));
  assert.ok(!json.lines.some((l) => l.includes('steps  ETA')), 'no progress display with --log-format json');
  const bad = spawnSync(process.execPath, [BIN, 'train', '--log-format', 'yaml'], { encoding: 'utf8', env: env() });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--log-format must be json or pretty, got 'yaml'/);
});

test('launch at a terminal: coordinator lines readable, worker lines folded under the display unless --verbose', () => {
  const tty = atTerminal(['launch', '--workers', '2', '--insecure', ...run('launch')]);
  assert.equal(tty.status, 0, tty.lines.join('\n'));
  assert.deepEqual(tty.lines.filter((l) => l.includes('{"level"')), []);
  const has = (re: RegExp, lines = tty.lines) => assert.ok(lines.some((l) => re.test(l)), `a line matches ${re}:\n${lines.join('\n')}`);
  has(/INFO  coord\/job +partition planned epoch=1 partition=\(rank:0 worker:w\d blocks:0\.\.\d/);
  has(/INFO  coord\/coordinator stage 2\/2: .*starting \(previous stage ended\) stage=1 layers=5 /);
  has(/^ +ranks busy +r0 \d+% +r1 \d+% +\d+ worker log lines folded \(--verbose shows them\)/);
  has(/^stage 2\/2 · blocks 5 +█{24} 8\/8 steps/);
  assert.ok(!tty.lines.some((l) => /INFO  w\d\/worker/.test(l)), 'worker info lines are folded');

  const verbose = atTerminal(['launch', '--workers', '2', '--insecure', '--verbose', ...run('verbose')]);
  assert.equal(verbose.status, 0);
  has(/INFO  w\d\/worker +assigned worker=w\d rank=\d of=2 blocks=/, verbose.lines);
});
