import path from 'node:path';
import { chatLoop } from '../../serve/chat.ts';
import { loadServing } from '../../serve/serve.ts';
import type { Command } from '../command.ts';
import { DEVICE_FLAGS, deviceOptions } from '../device.ts';

export const chatCommand: Command = {
  name: 'chat',
  summary: 'chat with a model (or a trained adapter on it) in the terminal, streaming tokens',
  usage: 'propipe chat --model DIR [--adapter DIR] [--max-tokens N] [--temperature T] [--system TEXT]',
  flags: {
    model: { type: 'string', description: 'base model directory (HF format)' },
    adapter: { type: 'string', description: "a run's output_dir/adapter, served on the base" },
    'max-tokens': { type: 'string', description: 'tokens per answer at most', default: '256' },
    temperature: { type: 'string', description: "sampling temperature, 0 = greedy (default: the model's generation_config.json, else 0.7)" },
    'top-p': { type: 'string', description: "nucleus sampling mass (default: the model's generation_config.json, else 0.95)" },
    system: { type: 'string', description: 'system message' },
    'max-model-len': { type: 'string', description: 'context length (default: the model’s)' },
    ...DEVICE_FLAGS,
  },
  async run(f) {
    const adapter = f.str('adapter');
    const served = await loadServing({
      model: f.required('model'),
      adapters: adapter ? [{ name: path.basename(path.resolve(adapter)), dir: adapter }] : [],
      maxModelLen: f.has('max-model-len') ? f.int('max-model-len') : undefined,
      maxBatch: 1,
      ...deviceOptions(f),
    });
    try {
      await chatLoop(
        served,
        {
          model: served.info[served.info.length - 1].id,
          maxTokens: f.int('max-tokens', 256),
          sampling: {
            temperature: f.num('temperature', served.defaults.temperature ?? 0.7),
            topP: f.num('top-p', served.defaults.topP ?? 0.95),
            topK: served.defaults.topK ?? 0,
            presencePenalty: 0,
            frequencyPenalty: 0,
            repetitionPenalty: served.defaults.repetitionPenalty ?? 1,
            seed: null,
          },
          system: f.str('system'),
        },
        process.stdin,
        process.stdout,
      );
    } finally {
      await served.close();
    }
  },
};
