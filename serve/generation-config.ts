// generation_config.json: the EOS ids a chat model ends its turn with (Qwen2's <|im_end|>, Llama 3's
// <|eot_id|>), which config.json may not list, and the sampling defaults its authors chose. vLLM
// applies both (`--generation-config auto`); so does propipe, for fields a request leaves out.
import fs from 'node:fs';
import path from 'node:path';
import { log } from '../common/log.ts';
import type { SamplingParams } from './sampling.ts';

export interface GenerationConfig {
  eos: number[];
  defaults: Partial<SamplingParams>;
}

export function readGenerationConfig(dir: string): GenerationConfig {
  const file = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(file)) return { eos: [], defaults: {} };
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${file}: invalid JSON (${(err as Error).message}); fix or remove it`);
  }
  const eos = raw.eos_token_id;
  const ids = Array.isArray(eos) ? eos : eos == null ? [] : [eos];
  if (!ids.every((id) => Number.isInteger(id) && (id as number) >= 0)) throw new Error(`${file}: eos_token_id must be a token id or a list of them, got ${JSON.stringify(eos)}`);
  const num = (k: string) => (typeof raw[k] === 'number' ? (raw[k] as number) : undefined);
  const defaults: Partial<SamplingParams> = {};
  if (num('temperature') !== undefined) defaults.temperature = num('temperature');
  if (num('top_p') !== undefined) defaults.topP = num('top_p');
  if (num('top_k') !== undefined) defaults.topK = num('top_k');
  if (num('repetition_penalty') !== undefined) defaults.repetitionPenalty = num('repetition_penalty');
  if (Object.keys(defaults).length > 0) log.info({ file, defaults }, "sampling defaults from the model's generation_config.json (a request's own values win)");
  return { eos: ids as number[], defaults };
}
