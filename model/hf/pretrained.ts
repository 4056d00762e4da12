// A model directory in HF format, opened lazily: config now, weights tensor by tensor, tokenizer if any.
import { loadConfig, type ModelConfig } from './config.ts';
import { paramSpecs } from '../llama/param-specs.ts';
import { openCheckpoint, type Checkpoint } from './checkpoint.ts';
import { loadTokenizer, TokenizerMissingError, type TextTokenizer } from './tokenizer.ts';

export interface Pretrained {
  dir: string;
  config: ModelConfig;
  raw: Record<string, unknown>;
  checkpoint: Checkpoint;
  /** Reads one parameter as float32, checking it exists with the shape the config implies. */
  load(name: string): Float32Array;
  /** Checks every parameter exists with the shape the config implies, from the file headers alone. */
  checkAll(): void;
}

export function openPretrained(dir: string): Pretrained {
  const { config, raw } = loadConfig(dir);
  const checkpoint = openCheckpoint(dir);
  const shapes = new Map(paramSpecs(config).map((s) => [s.name, s.shape]));
  const check = (name: string): void => {
    const want = shapes.get(name);
    if (!want) throw new Error(`${dir}: '${name}' is not a parameter of this ${config.arch} config`);
    if (!checkpoint.has(name)) throw new Error(`${dir}: the checkpoint has no tensor '${name}' (is it a ${config.arch} model with ${config.numLayers} layers?)`);
    const got = checkpoint.shape(name);
    if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
      throw new Error(`${dir}: tensor '${name}' has shape [${got}], config.json implies [${want}]`);
    }
  };
  const load = (name: string): Float32Array => {
    check(name);
    return checkpoint.readF32(name);
  };
  const checkAll = () => paramSpecs(config).forEach((s) => check(s.name));
  return { dir, config, raw, checkpoint, load, checkAll };
}

/** The directory's tokenizer, or null when it has none (pre-tokenized data still works). */
export async function optionalTokenizer(dir: string): Promise<TextTokenizer | null> {
  try {
    return await loadTokenizer(dir);
  } catch (err) {
    if (err instanceof TokenizerMissingError) return null;
    throw err;
  }
}
