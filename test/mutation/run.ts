// `npm run test:mutation`: applies each sabotage of mutants.ts, one at a time, to a scratch copy of the
// repository (the working tree is never touched) and runs its guarding test, which must fail. Prints
// one JSON line per mutant and a summary; exits 1 when any mutant survives or no longer applies.
// First each guarding test runs unmutated and must pass: a test that fails anyway kills nothing.
// `--only <substring>` runs the mutants whose name contains it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MUTANTS, type Mutant } from './mutants.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
// A guard that is off may leave its test waiting: that counts as failing, after this long.
const TIMEOUT_MS = 150_000;

/** The repository's files as they are now (tracked and new, not ignored), with node_modules linked. */
function scratchCopy(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-mutation-'));
  const files = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' }).stdout.split('\0').filter(Boolean);
  for (const f of files) {
    if (!fs.existsSync(path.join(ROOT, f))) continue;
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.copyFileSync(path.join(ROOT, f), path.join(dir, f));
  }
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

/** Runs one guarding test in the scratch copy; true when it passed. */
function passes(m: Mutant): boolean {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-force-exit', `--test-timeout=${TIMEOUT_MS - 20_000}`, '--test-name-pattern', m.pattern, m.test], {
    cwd: scratch,
    encoding: 'utf8',
    timeout: TIMEOUT_MS,
    killSignal: 'SIGKILL',
    env: { ...process.env, PROPIPE_LOG_LEVEL: 'warn', ...m.env },
  });
  return /^# pass [1-9]/m.test(r.stdout) && /^# fail 0$/m.test(r.stdout) && r.status === 0;
}

const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
const chosen = MUTANTS.filter((x) => !only || x.name.includes(only));
const scratch = scratchCopy();
const results: { name: string; outcome: 'killed' | 'survived' | 'does not apply' | 'guard test fails unmutated'; seconds: number }[] = [];
const broken = new Set<string>();
try {
  const guards = new Map(chosen.map((m) => [`${m.test} ${m.pattern} ${JSON.stringify(m.env ?? {})}`, m]));
  for (const [key, m] of guards) {
    const ok = passes(m);
    if (!ok) broken.add(key);
    console.log(JSON.stringify({ control: `${m.test} › ${m.pattern}`, passes: ok }));
  }
  for (const m of chosen) {
    if (broken.has(`${m.test} ${m.pattern} ${JSON.stringify(m.env ?? {})}`)) {
      results.push({ name: m.name, outcome: 'guard test fails unmutated', seconds: 0 });
      console.log(JSON.stringify(results[results.length - 1]));
      continue;
    }
    const file = path.join(scratch, m.file);
    const original = fs.readFileSync(file, 'utf8');
    const t0 = Date.now();
    if (original.split(m.find).length !== 2) {
      results.push({ name: m.name, outcome: 'does not apply', seconds: 0 });
      console.log(JSON.stringify(results[results.length - 1]));
      continue;
    }
    fs.writeFileSync(file, original.replace(m.find, () => m.replace));
    try {
      const passed = passes(m);
      results.push({ name: m.name, outcome: passed ? 'survived' : 'killed', seconds: Math.round((Date.now() - t0) / 1000) });
    } finally {
      fs.writeFileSync(file, original);
    }
    console.log(JSON.stringify(results[results.length - 1]));
  }
} finally {
  fs.rmSync(scratch, { recursive: true, force: true });
}
const survivors = results.filter((r) => r.outcome !== 'killed');
console.log(JSON.stringify({ mutants: results.length, killed: results.length - survivors.length, survivors: survivors.map((s) => `${s.name} (${s.outcome})`) }, null, 2));
process.exitCode = survivors.length === 0 ? 0 : 1;
