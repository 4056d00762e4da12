import { expandCheckpoint } from '../../model/expand/checkpoint.ts';
import { ExpansionError } from '../../model/expand/expand.ts';
import { UsageError } from '../args.ts';
import type { Command } from '../command.ts';

export const expandCommand: Command = {
  name: 'expand',
  summary: 'LLaMA Pro block expansion: interleave identity-initialized copies of blocks into a model',
  usage: 'propipe expand --model DIR --new-blocks P [--groups G] --out DIR2',
  flags: {
    model: { type: 'string', description: 'model directory to expand (HF format)' },
    'new-blocks': { type: 'string', description: 'number of blocks to add (P)' },
    groups: { type: 'string', description: 'groups of original blocks, each followed by P/G new blocks (default: P)' },
    out: { type: 'string', description: 'output directory (must not exist or be empty)' },
  },
  async run(f) {
    const newBlocks = f.int('new-blocks');
    let r;
    try {
      r = expandCheckpoint(f.required('model'), f.required('out'), newBlocks, f.int('groups', newBlocks));
    } catch (err) {
      // A layout the numbers cannot make is a flag problem; say which flags.
      if (err instanceof ExpansionError) throw new UsageError(`--new-blocks/--groups: ${err.message}`);
      throw err;
    }
    console.log(JSON.stringify({ out: r.dir, layers: r.config.numLayers, new_layer_indices: r.info.newLayerIndices }));
  },
};
