import { log } from '../../common/log.ts';
import { Trainer } from '../../local/trainer.ts';
import type { Command } from '../command.ts';
import { runConfigFromFlags, runFlagSpecs } from '../run-flags.ts';
import { writeRunReport } from '../run-report.ts';

export const trainCommand: Command = {
  name: 'train',
  summary: 'train in one process (full, LoRA, LLaMA Pro; staged unfreezing); flags override --config',
  usage: 'propipe train [--config run.yaml] [--model DIR --dataset FILE --output-dir DIR ...]',
  flags: {
    config: { type: 'string', description: 'YAML run file (keys are the flag names in snake_case)' },
    json: { type: 'boolean', description: 'print the result summary as JSON' },
    ...runFlagSpecs(),
  },
  async run(f) {
    const trainer = new Trainer(runConfigFromFlags(f));
    const r = await trainer.train();
    log.info({ steps: r.steps, finalTrainLoss: r.finalTrainLoss, finalValLoss: r.finalValLoss, tokensPerSec: Math.round(r.tokensPerSec) }, 'training finished');
    writeRunReport(trainer.run.output_dir);
    if (f.bool('json')) console.log(JSON.stringify(r));
  },
};

/** ms-swift's name for the same command, so `swift sft …` runs as `propipe sft …`. */
export const sftCommand: Command = {
  ...trainCommand,
  name: 'sft',
  summary: "ms-swift's name for train: takes the same flags, and ms-swift's (--use_llamapro True, --llamapro_num_new_blocks …)",
  usage: 'propipe sft --model DIR --dataset FILE --output_dir DIR [--use_llamapro True ...]',
};
