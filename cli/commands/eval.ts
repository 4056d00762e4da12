import { openPretrained } from '../../model/pretrained.ts';
import { evaluateLoss } from '../../recipe/evaluate.ts';
import { readModelData } from '../../recipe/examples.ts';
import type { Command } from '../command.ts';
import { DEVICE_FLAGS, deviceOptions } from '../device.ts';

export const evalCommand: Command = {
  name: 'eval',
  summary: 'mean token loss and perplexity of a model on a JSONL dataset',
  usage: 'propipe eval --model DIR --data FILE.jsonl [--json]',
  flags: {
    model: { type: 'string', description: 'model directory (HF format)' },
    data: { type: 'string', description: 'JSONL: text, alpaca, chat or pre-tokenized records' },
    'batch-size': { type: 'string', description: 'examples per forward pass', default: '8' },
    'max-length': { type: 'string', description: 'truncate examples to this many tokens' },
    json: { type: 'boolean', description: 'print one JSON object' },
    ...DEVICE_FLAGS,
  },
  async run(f) {
    const model = openPretrained(f.required('model'));
    const { dataset, padId } = await readModelData(model, f.required('data'), f.has('max-length') ? f.int('max-length') : undefined);
    const r = await evaluateLoss(model, dataset.examples, { batchSize: f.int('batch-size', 8), padId, ...deviceOptions(f) });
    if (f.bool('json')) console.log(JSON.stringify(r));
    else console.log(`loss ${r.loss.toFixed(6)}  perplexity ${r.perplexity.toFixed(3)}  tokens ${r.tokens}`);
  },
};
