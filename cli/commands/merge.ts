import { log } from '../../common/log.ts';
import { mergeAdapter } from '../../model/hf/merge.ts';
import { parseShardSize } from '../../model/hf/checkpoint.ts';
import { UsageError } from '../args.ts';
import type { Command } from '../command.ts';

export const mergeCommand: Command = {
  name: 'merge',
  summary: 'merge a trained adapter (new blocks, LoRA) into its base model: an ordinary HF checkpoint',
  usage: 'propipe merge --base DIR --adapter DIR --out DIR [--max-shard-size 5GB]',
  flags: {
    base: { type: 'string', description: 'the base model the adapter was trained from' },
    adapter: { type: 'string', description: 'an adapter directory (output_dir/adapter of a run)' },
    out: { type: 'string', description: 'output directory (replaced if it exists)' },
    'max-shard-size': { type: 'string', description: 'largest safetensors shard, e.g. 5GB, 500MB (tensors are written one at a time)', default: '5GB' },
  },
  async run(f) {
    let maxShardBytes: number;
    try {
      maxShardBytes = parseShardSize(f.str('max-shard-size') ?? '5GB');
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const out = mergeAdapter(f.required('base'), f.required('adapter'), f.required('out'), { maxShardBytes });
    log.info({ out }, 'merged model written');
  },
};
