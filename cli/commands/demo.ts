import { formatDemoTable, runDemo } from '../../demo/run.ts';
import type { Command } from '../command.ts';

export const demoCommand: Command = {
  name: 'demo',
  summary: 'the main job on the embedded default: pretrain a tiny model on domain A, fine-tune on B with five methods (full, LoRA, LLaMA Pro variants), print the retention table',
  usage: 'propipe demo [--out DIR] [--seed S]',
  flags: {
    out: { type: 'string', description: 'working directory', default: 'runs/demo' },
    seed: { type: 'string', description: 'seed of data, model and training', default: '1' },
    'pretrain-steps': { type: 'string', description: 'optimizer steps of pretraining on A', default: '400' },
    'finetune-steps': { type: 'string', description: 'optimizer steps of each fine-tuning method on B', default: '200' },
    threads: { type: 'string', description: 'intra-op threads per worker (0 = all cores)', default: '1' },
    workers: { type: 'string', description: 'pipeline workers per training run (coordinator + NATS + gRPC); 0 trains in one process', default: '2' },
    json: { type: 'boolean', description: 'print the results as JSON instead of a table' },
  },
  async run(f) {
    const r = await runDemo({ out: f.str('out') ?? 'runs/demo', seed: f.int('seed', 1), pretrainSteps: f.int('pretrain-steps', 400), finetuneSteps: f.int('finetune-steps', 200), threads: f.int('threads', 1), workers: f.int('workers', 2) });
    console.log(f.bool('json') ? JSON.stringify(r) : formatDemoTable(r));
  },
};
