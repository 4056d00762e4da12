// Request bodies of /v1/completions and /v1/chat/completions, validated with the parameter named in
// every error, and turned into sampling settings. Ranges follow OpenAI's API (and vLLM's extensions:
// top_k, repetition_penalty).
import { z } from 'zod';
import type { SamplingParams } from '../sampling.ts';
import { badParam } from './errors.ts';

const common = {
  model: z.string().min(1),
  max_tokens: z.number().int().positive().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(-1).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string(), z.array(z.string().min(1)).max(16)]).nullish(),
  n: z.number().int().min(1).max(64).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  repetition_penalty: z.number().gt(0).max(10).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
  user: z.string().nullish(),
  ignore_eos: z.boolean().nullish(),
};

const tokenIds = z.array(z.number().int().nonnegative()).min(1);

export const completionSchema = z.looseObject({
  ...common,
  prompt: z.union([z.string(), z.array(z.string()).min(1), tokenIds, z.array(tokenIds).min(1)]),
  logprobs: z.number().int().min(0).max(20).nullish(),
  echo: z.literal(false).nullish(),
});

const textPart = z.looseObject({ type: z.literal('text'), text: z.string() });
export const chatSchema = z.looseObject({
  ...common,
  max_completion_tokens: z.number().int().positive().nullish(),
  messages: z.array(z.looseObject({ role: z.string().min(1), content: z.union([z.string(), z.array(textPart), z.null()]).optional() })).min(1),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
});

export type CompletionBody = z.infer<typeof completionSchema>;
export type ChatBody = z.infer<typeof chatSchema>;

/** Parses `body` or throws a 400 that names the first offending parameter. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badParam('body', 'the request body must be a JSON object');
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const param = issue.path.map(String).join('.') || 'body';
  const value = issue.path.reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[k as PropertyKey] : undefined), body);
  throw badParam(param, value === undefined ? `'${param}' is required` : `invalid '${param}' (${JSON.stringify(value)}): ${issue.message}`);
}

/** The request's sampling settings; what it leaves out comes from `defaults` (generation_config.json), then OpenAI's. */
export function samplingOf(b: CompletionBody | ChatBody, defaults: Partial<SamplingParams> = {}): SamplingParams {
  const topK = b.top_k ?? defaults.topK ?? 0;
  return {
    temperature: b.temperature ?? defaults.temperature ?? 1,
    topP: b.top_p ?? defaults.topP ?? 1,
    topK: topK === -1 ? 0 : topK,
    presencePenalty: b.presence_penalty ?? 0,
    frequencyPenalty: b.frequency_penalty ?? 0,
    repetitionPenalty: b.repetition_penalty ?? defaults.repetitionPenalty ?? 1,
    seed: b.seed ?? null,
  };
}

export function stopsOf(b: CompletionBody | ChatBody): string[] {
  return b.stop == null ? [] : typeof b.stop === 'string' ? (b.stop ? [b.stop] : []) : b.stop;
}

/** max_tokens against the context: the default fills it, as vLLM does; an overflow is a 400. */
export function maxTokensOf(requested: number | null | undefined, promptTokens: number, maxModelLen: number, promptParam: string): number {
  if (promptTokens >= maxModelLen) {
    throw badParam(promptParam, `This model's maximum context length is ${maxModelLen} tokens. However, your prompt has ${promptTokens} tokens. Please shorten the prompt.`);
  }
  if (requested == null) return maxModelLen - promptTokens;
  if (promptTokens + requested > maxModelLen) {
    throw badParam(
      'max_tokens',
      `This model's maximum context length is ${maxModelLen} tokens. However, you requested ${promptTokens + requested} tokens ` +
        `(${promptTokens} in the prompt, ${requested} in the completion). Please reduce the prompt or max_tokens.`,
    );
  }
  return requested;
}
