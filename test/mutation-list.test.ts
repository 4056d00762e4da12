// The sabotage list must not rot: code moves on, and a mutant whose text no longer occurs (or occurs
// twice) would test nothing. `npm run test:mutation` refuses such a mutant only when it is run (23 min);
// this checks every entry against the tree in milliseconds.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { MUTANTS } from './mutation/mutants.ts';

test('every mutant patches text that occurs exactly once, and names an existing test file', () => {
  const stale = MUTANTS.filter((m) => fs.readFileSync(m.file, 'utf8').split(m.find).length !== 2).map((m) => `${m.name} (${m.file})`);
  assert.deepEqual(stale, [], 'mutants whose text does not occur exactly once: update test/mutation/mutants.ts');
  for (const m of MUTANTS) assert.ok(fs.existsSync(m.test), `${m.name}: no test file ${m.test}`);
  assert.equal(new Set(MUTANTS.map((m) => m.name)).size, MUTANTS.length, 'mutant names are unique');
});
