import { openPretrained } from '../../model/hf/pretrained.ts';
import { writeSafetensors } from '../../model/hf/safetensors-write.ts';
import { log } from '../../common/log.ts';
import { readModelData } from '../../recipe/examples.ts';
import { datasetGradients } from '../../tasks/gradients.ts';
import { trainableSet } from '../../recipe/trainable.ts';
import { UsageError } from '../args.ts';
import type { Command } from '../command.ts';
import { DEVICE_FLAGS, deviceOptions } from '../device.ts';

export const gradCommand: Command = {
  name: 'grad',
  summary: 'gradients of the mean token loss over a whole JSONL file, saved as safetensors under HF names',
  usage: 'propipe grad --model DIR --data FILE.jsonl --out FILE.safetensors [--trainable all|none|<blocks>]',
  flags: {
    model: { type: 'string', description: 'model directory (HF format)' },
    data: { type: 'string', description: 'JSONL dataset, taken as one batch' },
    out: { type: 'string', description: 'output .safetensors file' },
    trainable: { type: 'string', description: "all, none, or blocks like '0,2-3' (may add embed, norm, head)", default: 'all' },
    'batch-size': { type: 'string', description: 'examples per pass (the result is the same for any value)', default: '8' },
    'max-length': { type: 'string', description: 'truncate examples to this many tokens' },
    ...DEVICE_FLAGS,
  },
  async run(f) {
    const model = openPretrained(f.required('model'));
    const out = f.required('out');
    let trainable: Set<string>;
    try {
      trainable = trainableSet(model.config, f.str('trainable') ?? 'all');
    } catch (err) {
      throw new UsageError(`--trainable: ${(err as Error).message}`);
    }
    const { dataset, padId } = await readModelData(model, f.required('data'), f.has('max-length') ? f.int('max-length') : undefined);
    const r = await datasetGradients(model, dataset.examples, trainable, { batchSize: f.int('batch-size', 8), padId, ...deviceOptions(f) });
    const tensors = [...r.grads].map(([name, data]) => ({ name, dtype: 'F32' as const, shape: model.checkpoint.shape(name), data }));
    writeSafetensors(out, tensors, { loss: String(r.loss), tokens: String(r.tokens) });
    log.info({ out, loss: r.loss, tokens: r.tokens, tensors: tensors.length }, 'gradients written');
    console.log(JSON.stringify({ loss: r.loss, tokens: r.tokens, tensors: tensors.length, out }));
  },
};
