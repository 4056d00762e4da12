// A dataset file read against a model: its tokenizer if the data needs one, its vocab for range checks.
import { optionalTokenizer, type Pretrained } from '../model/hf/pretrained.ts';
import type { TextTokenizer } from '../model/hf/tokenizer.ts';
import { readJsonl, type Dataset } from './data.ts';

export interface ModelData {
  dataset: Dataset;
  tokenizer: TextTokenizer | null;
  padId: number;
}

export async function readModelData(model: Pretrained, file: string, maxLength?: number): Promise<ModelData> {
  const tokenizer = await optionalTokenizer(model.dir);
  const dataset = await readJsonl(file, { tokenizer, vocabSize: model.config.vocabSize, maxLength });
  if (dataset.examples.length === 0) throw new Error(`${file}: no example with a target token`);
  return { dataset, tokenizer, padId: tokenizer?.padId ?? model.config.padTokenId ?? 0 };
}

/** Consecutive chunks of at most `size` examples, in file order. */
export function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}
