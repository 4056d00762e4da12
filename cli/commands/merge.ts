import { log } from '../../common/log.ts';
import { mergeAdapter } from '../../model/hf/merge.ts';
import type { Command } from '../command.ts';

export const mergeCommand: Command = {
  name: 'merge',
  summary: 'merge a trained adapter (new blocks, LoRA) into its base model: an ordinary HF checkpoint',
  usage: 'propipe merge --base DIR --adapter DIR --out DIR',
  flags: {
    base: { type: 'string', description: 'the base model the adapter was trained from' },
    adapter: { type: 'string', description: 'an adapter directory (output_dir/adapter of a run)' },
    out: { type: 'string', description: 'output directory (replaced if it exists)' },
  },
  async run(f) {
    const out = mergeAdapter(f.required('base'), f.required('adapter'), f.required('out'));
    log.info({ out }, 'merged model written');
  },
};
