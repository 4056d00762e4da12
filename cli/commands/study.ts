import fs from 'node:fs';
import path from 'node:path';
import { BUDGETS } from '../../study/plan.ts';
import { runStudy } from '../../study/run.ts';
import { formatStudy, scatterHtml } from '../../study/summary.ts';
import { UsageError } from '../args.ts';
import type { Command } from '../command.ts';

export const studyCommand: Command = {
  name: 'study',
  summary: 'retention vs adaptation, tuned per method, over seeds: full, LoRA and LLaMA Pro variants, with ablations of the staged recipe',
  usage: 'propipe study [--out DIR] [--seeds 3] [--budget tiny|small|medium] [--methods full,pro-staged,...] [--json]',
  flags: {
    out: { type: 'string', description: 'working directory (an interrupted study resumes from its cells.jsonl)', default: 'runs/study' },
    seeds: { type: 'string', description: 'fine-tuning seeds per cell', default: '3' },
    budget: { type: 'string', description: 'tiny (a smoke run), small (tens of minutes on 2 cores) or medium', default: 'small' },
    methods: { type: 'string', description: 'comma-separated method names (default: all)' },
    threads: { type: 'string', description: 'intra-op threads per run (0 = all cores)', default: '0' },
    json: { type: 'boolean', description: 'print the raw results as JSON' },
  },
  async run(f) {
    const budget = f.str('budget') ?? 'small';
    if (!(budget in BUDGETS)) throw new UsageError(`--budget must be one of ${Object.keys(BUDGETS).join(', ')}, got '${budget}'`);
    const out = f.str('out') ?? 'runs/study';
    const seeds = f.int('seeds', 3);
    if (seeds < 1) throw new UsageError('--seeds must be at least 1');
    const r = await runStudy({ out, seeds, budget: budget as keyof typeof BUDGETS, threads: f.int('threads', 0), methods: f.str('methods')?.split(',').map((s) => s.trim()) });
    fs.writeFileSync(path.join(out, 'study.html'), scatterHtml(r));
    console.log(f.bool('json') ? JSON.stringify(r) : formatStudy(r));
  },
};
