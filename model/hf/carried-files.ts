// Files besides the weights that a Hugging Face model directory carries from input to output.
import fs from 'node:fs';
import path from 'node:path';

/** Tokenizer and generation files that travel with a model's weights. */
export const CARRIED_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'chat_template.jinja',
  'chat_template.json',
  'generation_config.json',
];

export function copyCarriedFiles(fromDir: string, toDir: string): void {
  for (const f of CARRIED_FILES) {
    const from = path.join(fromDir, f);
    if (fs.existsSync(from)) fs.copyFileSync(from, path.join(toDir, f));
  }
}
