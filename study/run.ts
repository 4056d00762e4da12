// `propipe study`: the seed's claim measured fairly. One base model is pretrained on domain A; each
// method's learning rate is chosen on domain B's dev loss (never on A); every method then trains with
// that rate over several seeds, and the seed's advice is ablated one knob at a time. Each run is a
// `propipe train` child process (peak RSS per run); cells are appended to cells.jsonl as they finish,
// so an interrupted study resumes where it stopped.
import fs from 'node:fs';
import path from 'node:path';
import { childLog } from '../common/log.ts';
import { createRandomModel } from '../model/hf/init.ts';
import { corpusForTokenizer, DOMAIN_A, DOMAIN_B, writeDemoData } from '../demo/corpus.ts';
import { trainChild } from '../demo/run.ts';
import { measureModel, type Scores, type StudyFiles } from './measure.ts';
import { ABLATED, ABLATIONS, BUDGETS, METHODS, pretrainRun, SEED_ADVICE, STUDY_MODEL, type Advice, type Budget, type StudyMethod } from './plan.ts';

const log = childLog({ component: 'study' });

export interface StudyOptions {
  out: string;
  seeds: number;
  budget: keyof typeof BUDGETS;
  threads: number;
  /** Only these methods (names from plan.ts); all by default. */
  methods?: string[];
}

export interface Cell extends Scores {
  method: string;
  /** '' for the method as planned, or `knob=value` for an ablation. */
  variant: string;
  lr: number;
  seed: number;
  steps: number;
  tokens: number;
  tokensPerSec: number;
  peakRssMB: number;
  seconds: number;
}

export interface StudyResult {
  budget: Budget & { name: string };
  seeds: number[];
  base: Scores;
  /** Learning rate chosen per method, and the dev losses of the sweep. */
  chosen: Record<string, { lr: number; sweep: { lr: number; devLossB: number }[] }>;
  cells: Cell[];
}

const jsonl = (records: readonly object[]) => records.map((r) => JSON.stringify(r)).join('\n') + '\n';
const key = (c: Pick<Cell, 'method' | 'variant' | 'lr' | 'seed'>) => `${c.method}|${c.variant}|${c.lr}|${c.seed}`;

/** Domain B's held-out wordings split in two: dev (LR choice, early stopping) and test (reported). */
function splitHeldOut(dir: string): { bDev: string; bTest: string; aValid: string } {
  const held = DOMAIN_B.validTexts();
  const files = { bDev: path.join(dir, 'b_dev.jsonl'), bTest: path.join(dir, 'b_test.jsonl'), aValid: path.join(dir, 'a_valid.jsonl') };
  fs.writeFileSync(files.bDev, jsonl(held.filter((_, i) => i % 2 === 0)));
  fs.writeFileSync(files.bTest, jsonl(held.filter((_, i) => i % 2 === 1)));
  fs.writeFileSync(files.aValid, jsonl(DOMAIN_A.validTexts()));
  return files;
}

/** The learning rate with the lowest dev loss on B (ties: the smaller rate). */
export function chooseLearningRate(sweep: readonly { lr: number; devLossB: number }[]): number {
  const finite = sweep.filter((s) => Number.isFinite(s.devLossB));
  if (!finite.length) throw new Error('every learning rate of the sweep diverged');
  return [...finite].sort((a, b) => a.devLossB - b.devLossB || a.lr - b.lr)[0].lr;
}

export async function runStudy(o: StudyOptions): Promise<StudyResult> {
  const budget = BUDGETS[o.budget];
  const seeds = Array.from({ length: o.seeds }, (_, i) => i + 1);
  const methods = o.methods ? METHODS.filter((m) => o.methods!.includes(m.name)) : METHODS;
  if (o.methods && methods.length !== o.methods.length) throw new Error(`unknown method in ${o.methods.join(', ')}; methods: ${METHODS.map((m) => m.name).join(', ')}`);
  fs.mkdirSync(o.out, { recursive: true });
  const dataDir = path.join(o.out, 'data');
  const demo = await writeDemoData(dataDir, 1, { bTrain: budget.bTrain });
  const held = splitHeldOut(dataDir);
  const files: StudyFiles = { aQuiz: demo.aQuiz, aValid: held.aValid, bQuiz: demo.bQuiz, bValid: held.bTest };
  const configs = path.join(o.out, 'configs');
  fs.mkdirSync(configs, { recursive: true });

  // One base for every seed: the seeds vary fine-tuning (data order, adapters), not the starting point.
  const init = path.join(o.out, 'init');
  const baseDir = path.join(o.out, 'pretrain', 'final');
  if (!fs.existsSync(path.join(baseDir, 'config.json'))) {
    fs.rmSync(init, { recursive: true, force: true });
    await createRandomModel(init, { ...STUDY_MODEL, seed: 1, corpus: corpusForTokenizer() });
    log.info({ steps: budget.pretrainSteps, layers: STUDY_MODEL.layers }, 'pretraining the base model on domain A');
    await trainChild(pretrainRun(init, demo.pretrain, path.join(o.out, 'pretrain'), 1, budget.pretrainSteps, o.threads), path.join(configs, 'pretrain.yaml'), o.threads, 0);
  }
  const base = await measureModel(baseDir, files, o.threads);
  log.info(base, 'base model after pretraining');

  const cellsFile = path.join(o.out, 'cells.jsonl');
  const done = new Map<string, Cell>();
  if (fs.existsSync(cellsFile)) for (const l of fs.readFileSync(cellsFile, 'utf8').split('\n').filter(Boolean)) done.set(key(JSON.parse(l)), JSON.parse(l));
  const devLoss = new Map<string, number>();

  const run = async (m: StudyMethod, lr: number, seed: number, advice: Advice, variant: string): Promise<Cell> => {
    const k = key({ method: m.name, variant, lr, seed });
    const name = `${m.name}${variant ? `-${variant.replace('=', '')}` : ''}-lr${lr.toExponential(1)}-s${seed}`;
    const out = path.join(o.out, 'runs', name);
    const cfg = m.config({ model: baseDir, dataset: demo.bTrain, val_dataset: held.bDev, output_dir: out, seed, threads: o.threads }, lr, budget, advice);
    let cell = done.get(k);
    if (!cell) {
      log.info({ method: m.name, variant, lr, seed }, 'fine-tuning on domain B');
      fs.rmSync(out, { recursive: true, force: true });
      const t0 = performance.now();
      const r = await trainChild(cfg, path.join(configs, `${name}.yaml`), o.threads, 0);
      const seconds = (performance.now() - t0) / 1000;
      cell = { method: m.name, variant, lr, seed, ...(await measureModel(r.finalDir, files, o.threads)), steps: r.steps, tokens: r.tokens, tokensPerSec: r.tokensPerSec, peakRssMB: r.peakRssBytes / 2 ** 20, seconds };
      fs.appendFileSync(cellsFile, JSON.stringify(cell) + '\n');
      done.set(k, cell);
      // Only the dev split may choose; the reported numbers are kept apart.
      fs.rmSync(path.join(out, 'final'), { recursive: true, force: true });
    }
    return cell;
  };

  const chosen: StudyResult['chosen'] = {};
  for (const m of methods) {
    const sweep: { lr: number; devLossB: number }[] = [];
    const trial = async (f: number) => {
      const lr = Number((m.lr * f).toPrecision(2));
      await run(m, lr, seeds[0], SEED_ADVICE, '');
      sweep.push({ lr, devLossB: devLossOf(o.out, m, lr, seeds[0], devLoss) });
      sweep.sort((a, b) => a.lr - b.lr);
    };
    for (const f of budget.lrFactors) await trial(f);
    // A best rate at the edge of the grid is not a tuned rate: widen the grid that way (twice at most).
    const step = budget.lrFactors.length > 1 ? budget.lrFactors[1] / budget.lrFactors[0] : 0;
    for (let k = 0, lo = budget.lrFactors[0], hi = budget.lrFactors[budget.lrFactors.length - 1]; step > 1 && k < 2; k++) {
      const best = chooseLearningRate(sweep);
      if (best === sweep[sweep.length - 1].lr) await trial((hi *= step));
      else if (best === sweep[0].lr) await trial((lo /= step));
      else break;
    }
    const lr = chooseLearningRate(sweep);
    chosen[m.name] = { lr, sweep };
    log.info({ method: m.name, lr, sweep: chosen[m.name].sweep }, 'learning rate chosen on B dev loss');
    for (const seed of seeds.slice(1)) await run(m, lr, seed, SEED_ADVICE, '');
  }
  const ablated = methods.find((m) => m.name === ABLATED);
  if (budget.ablations && ablated) {
    for (const a of ABLATIONS) {
      for (const v of a.values) {
        if (v === SEED_ADVICE[a.knob]) continue;
        for (const seed of seeds) await run(ablated, chosen[ABLATED].lr, seed, { ...SEED_ADVICE, [a.knob]: v }, `${a.knob}=${v}`);
      }
    }
  }
  const cells = [...done.values()].filter((c) => methods.some((m) => m.name === c.method));
  const result: StudyResult = { budget: { ...budget, name: o.budget }, seeds, base, chosen, cells };
  fs.writeFileSync(path.join(o.out, 'study.json'), JSON.stringify(result, null, 2) + '\n');
  return result;
}

/** A run's final dev loss on B, from the last evaluation in its metrics.jsonl. */
function devLossOf(out: string, m: StudyMethod, lr: number, seed: number, cache: Map<string, number>): number {
  const name = `${m.name}-lr${lr.toExponential(1)}-s${seed}`;
  const hit = cache.get(name);
  if (hit !== undefined) return hit;
  const lines = fs.readFileSync(path.join(out, 'runs', name, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { eval_loss?: number });
  const evals = lines.filter((l) => typeof l.eval_loss === 'number');
  const loss = evals.length ? evals[evals.length - 1].eval_loss! : NaN;
  cache.set(name, loss);
  return loss;
}
