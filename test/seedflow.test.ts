// The seed's flow end to end: download from a Hub (a local stand-in), `propipe sft` with the exact
// ms-swift command line, automatic C-Eval/MMLU evaluation of the final model into result.json, the
// log and metrics.jsonl — single-process and pipelined — plus the ms-swift flag spellings.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import YAML from 'yaml';
import { parseFlags } from '../cli/args.ts';
import { trainCommand } from '../cli/commands/train.ts';
import { runOverrides } from '../cli/run-flags.ts';
import { launch } from '../supervisor/launch.ts';
import { downloadModel } from '../hub/download.ts';
import { createRandomModel } from '../model/hf/init.ts';
import { loadRunConfig } from '../recipe/run-config.ts';
import { planStages } from '../recipe/stages.ts';
import { modelTypeMatches } from '../recipe/swift-args.ts';
import { propipe } from './support/cli.ts';
import { hubFilesOf, startFakeHub } from './support/fake-hub.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-seed-'));
const base = path.join(tmp, 'hub-src');
const model = path.join(tmp, 'models', 'tiny');
const dataset = path.join(tmp, 'train.jsonl');
const ceval = path.join(tmp, 'ceval');
const mmlu = path.join(tmp, 'mmlu');

// The seed's command as ms-swift users write it (swift sft …), with paths for this machine.
const SEED = ['--use_llamapro', 'True', '--llamapro_num_target_modules', '4', '--num_train_epochs_per_stage', '1', '--stage_ratio', '0.3', '--lora_rank', '64'];
const seedArgs = (out: string) => ['--model', model, '--dataset', dataset, '--output_dir', out, ...SEED];

function writeCsv(rel: string, rows: string[]): void {
  fs.mkdirSync(path.dirname(path.join(tmp, rel)), { recursive: true });
  fs.writeFileSync(path.join(tmp, rel), rows.join('\n') + '\n');
}

before(async () => {
  await createRandomModel(base, { layers: 4, hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, vocab: 300, seed: 8 });
  const hub = await startFakeHub({ repo: 'seed/tiny', commit: 'c'.repeat(40), files: hubFilesOf(base) });
  try {
    await downloadModel({ repo: 'seed/tiny', out: model, hubUrl: hub.url });
  } finally {
    await hub.close();
  }
  const words = 'alpha beta gamma delta epsilon zeta eta theta'.split(' ');
  fs.writeFileSync(dataset, Array.from({ length: 16 }, (_, i) => JSON.stringify({ text: words.map((_, j) => words[(i + j) % words.length]).join(' ') })).join('\n') + '\n');
  const h = 'id,question,A,B,C,D,answer';
  writeCsv('ceval/dev/computer_network_dev.csv', [h, '0,alpha beta ____,gamma,delta,eta,zeta,A', '1,beta gamma ____,eta,delta,zeta,alpha,B']);
  writeCsv('ceval/val/computer_network_val.csv', [h, '0,gamma delta ____,zeta,epsilon,alpha,beta,B', '1,delta epsilon ____,beta,gamma,zeta,eta,C', '2,eta theta ____,alpha,beta,gamma,delta,A']);
  writeCsv('ceval/dev/law_dev.csv', [h, '0,zeta eta ____,theta,alpha,beta,gamma,A']);
  writeCsv('ceval/val/law_val.csv', [h, '0,theta alpha ____,gamma,beta,delta,eta,B']);
  writeCsv('mmlu/data/dev/anatomy_dev.csv', ['alpha beta?,gamma,delta,eta,zeta,A']);
  writeCsv('mmlu/data/test/anatomy_test.csv', ['beta gamma?,eta,delta,zeta,alpha,B', 'gamma delta?,epsilon,zeta,alpha,beta,A']);
});

describe('ms-swift spellings', () => {
  test('the seed’s command line parses into the run config it means', () => {
    const run = loadRunConfig(undefined, runOverrides(parseFlags(seedArgs(path.join(tmp, 'x')), trainCommand.flags)));
    assert.equal(run.train_type, 'llamapro');
    assert.equal(run.llamapro_new_blocks, 4, "ms-swift's default number of new blocks for an unexpanded model");
    assert.equal(run.blocks_per_group, 4, 'llamapro_num_target_modules: new blocks unfrozen per stage');
    assert.equal(run.epochs_per_stage, 1);
    assert.equal(run.stage_ratio, 0.3);
    assert.equal(run.lora_rank, 64);
    assert.equal(run.output_dir, path.join(tmp, 'x'));
  });

  test('stage_ratio sizes the stages when no count is given; snake_case, kebab-case and boolean values agree', () => {
    const cfg = (args: string[]) => loadRunConfig(undefined, runOverrides(parseFlags(['--model', model, '--dataset', dataset, '--output_dir', 'o', ...args], trainCommand.flags)));
    const run = cfg(['--use_llamapro', 'true', '--llamapro_num_new_blocks', '4', '--stage_ratio', '0.5']);
    const layout = Array.from({ length: 8 }, (_, i) => ({ kind: i % 2 ? ('new' as const) : ('original' as const), source: i >> 1 }));
    const plan = planStages(run, { numLayers: 8, hiddenSize: 32, intermediateSize: 64, numHeads: 4, numKvHeads: 2, headDim: 8, tieWordEmbeddings: false, qkvBias: false } as never, layout);
    assert.deepEqual(plan.groups, [[1, 3], [5, 7]], '0.5 of 4 new blocks: 2 per stage');
    assert.deepEqual(cfg(['--learning_rate', '3e-4', '--resume', 'false']), cfg(['--learning-rate=3e-4']));
    assert.equal(cfg(['--resume', 'True']).resume, true);
  });

  test('misspelt flags and commands get "did you mean"; contradictions and a wrong model_type are named', () => {
    const typo = propipe(['sft', '--learnig_rate', '1e-4']);
    assert.equal(typo.status, 2);
    assert.match(typo.stderr, /unknown flag --learnig_rate; did you mean --learning_rate\?/);
    assert.match(propipe(['sft', '--llamapro-num-new-block', '4']).stderr, /did you mean --llamapro-num-new-blocks\?/);
    assert.match(propipe(['stf']).stderr, /unknown command 'stf'; did you mean sft\?/);
    assert.throws(() => loadRunConfig(undefined, { model, dataset, output_dir: 'o', lora_rnak: 4 }), /unknown field\(s\) 'lora_rnak' \(did you mean 'lora_rank'\?\)/);
    const off = propipe(['sft', '--model', model, '--dataset', dataset, '--output_dir', path.join(tmp, 'o1'), '--use_llamapro', 'False']);
    assert.equal(off.status, 2);
    assert.match(off.stderr, /use_llamapro false: give train_type full or lora/);
    const both = propipe(['sft', '--model', model, '--dataset', dataset, '--output_dir', path.join(tmp, 'o2'), '--use_llamapro', 'true', '--train_type', 'lora', '--lora_rank', '2']);
    assert.match(both.stderr, /use_llamapro true and train_type "lora" disagree: give one of them/);
    const wrongType = propipe(['sft', ...seedArgs(path.join(tmp, 'o3')), '--model_type', 'qwen2_5']);
    assert.equal(wrongType.status, 4, 'a model that does not match is permanent (exit 4)');
    assert.match(wrongType.stderr, /model_type 'qwen2_5' does not match .*config\.json, whose model_type is 'llama'/);
    assert.ok(!fs.existsSync(path.join(tmp, 'o3', 'final')));
    assert.ok(modelTypeMatches('llama3_1', 'llama') && modelTypeMatches('qwen2_5', 'qwen2') && modelTypeMatches('Mistral', 'mistral'));
    assert.ok(!modelTypeMatches('qwen2_moe', 'qwen2') && !modelTypeMatches('qwen', 'qwen2') && !modelTypeMatches('llava', 'llama'));
  });

  test('a bad eval_tasks path fails before training, naming the file and what to do', () => {
    const out = path.join(tmp, 'o4');
    const r = propipe(['sft', ...seedArgs(out), '--eval_tasks', `ceval=${path.join(tmp, 'nope')}`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /eval_tasks \(ceval .*nope\): .*nope: no such file or directory/);
    assert.ok(!fs.existsSync(path.join(out, 'final')) && !fs.existsSync(path.join(out, 'metrics.jsonl')));
  });
});

describe('download → sft → automatic evaluation', () => {
  // eval_tasks in the YAML run file (shots per task); the seed's flags on the command line.
  const evalYaml = () => {
    const file = path.join(tmp, 'evals.yaml');
    fs.writeFileSync(file, YAML.stringify({ eval_tasks: [{ task: 'ceval', data: ceval, shots: 1 }, { task: 'mmlu', data: mmlu, shots: 1 }], max_length: 64 }));
    return file;
  };
  const checkResult = (out: string) => {
    const result = JSON.parse(fs.readFileSync(path.join(out, 'result.json'), 'utf8'));
    const [c, m] = result.evals;
    assert.equal(c.task, 'ceval');
    assert.equal(c.split, 'val');
    assert.equal(c.shots, 1);
    assert.equal(c.questions, 4);
    assert.deepEqual(Object.keys(c.categories).sort(), ['Humanities', 'STEM']);
    assert.equal(c.subjects.computer_network.questions, 3);
    assert.equal(c.correct, c.subjects.computer_network.correct + c.subjects.law.correct);
    assert.equal(m.task, 'mmlu');
    assert.equal(m.questions, 2);
    assert.equal(m.categories['other (business, health, misc.)'].questions, 2);
    const events = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.event === 'eval_task');
    assert.deepEqual(events.map((e) => [e.task, e.questions, e.accuracy]), [['ceval', 4, c.accuracy], ['mmlu', 2, m.accuracy]]);
    return result;
  };

  test('propipe sft with the seed’s flags trains, exports and scores the final model', () => {
    const out = path.join(tmp, 'sft');
    const r = propipe(['sft', '--config', evalYaml(), ...seedArgs(out)], { PROPIPE_LOG_LEVEL: 'info' });
    assert.equal(r.status, 0, r.stderr.slice(-3000));
    assert.match(r.stderr, /ceval val 1-shot: accuracy \d+\.\d\d% \(\d\/4\) — Humanities \d+\.\d% \(1\), STEM \d+\.\d% \(3\)/);
    const result = checkResult(out);
    assert.equal(result.steps, 4, '16 examples, batch 4, one epoch in the one stage of 4 new blocks');
    assert.ok(fs.existsSync(path.join(result.finalDir, 'config.json')));
  });

  test('pipelined: rank 0 scores the exported model and the coordinator puts the scores in result.json', async () => {
    const out = path.join(tmp, 'launch');
    const lines: string[] = [];
    const code = await launch({
      workers: 2,
      coordinatorArgs: ['--config', evalYaml(), ...seedArgs(out), '--max_steps', '2'],
      insecure: true,
      quiet: true,
      env: { PROPIPE_LOG_LEVEL: 'info' },
      onLine: (tag, line) => lines.push(`${tag} ${line}`),
    });
    assert.equal(code, 0, lines.slice(-20).join('\n'));
    const result = checkResult(out);
    assert.equal(result.workers, 2);
    // Rank 0 is whichever worker registered first.
    assert.ok(lines.some((l) => /^w\d /.test(l) && l.includes('mmlu test 1-shot: accuracy')), lines.filter((l) => l.includes('accuracy')).join('\n') || lines.slice(-5).join('\n'));
  });
});
