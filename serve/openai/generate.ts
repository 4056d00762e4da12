// POST /v1/completions and /v1/chat/completions: prompt to token ids, one engine request per prompt,
// then one JSON body or a server-sent event stream. A client that goes away cancels its requests.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TextTokenizer } from '../../model/hf/tokenizer.ts';
import type { Engine } from '../engine.ts';
import type { SamplingParams } from '../sampling.ts';
import type { ChoiceResult, GenerationRequest } from '../sequence.ts';
import { badParam, unknownModel } from './errors.ts';
import { chatSchema, completionSchema, maxTokensOf, parseBody, samplingOf, stopsOf, type ChatBody, type CompletionBody } from './params.ts';
import { ResponseWriter, usage, type Kind } from './responses.ts';

export interface GenerateContext {
  engine: Engine;
  tokenizer: TextTokenizer;
  models: readonly string[];
  maxModelLen: number;
  maxBatch: number;
  /** Sampling defaults of the model's generation_config.json. */
  defaults: Partial<SamplingParams>;
}

interface Prepared {
  kind: Kind;
  body: CompletionBody | ChatBody;
  prompts: number[][];
  maxTokens: number | null | undefined;
  logprobs: number | null;
  promptParam: string;
}

function prepareCompletion(ctx: GenerateContext, raw: unknown): Prepared {
  const body = parseBody(completionSchema, raw);
  const p = body.prompt;
  const list: (string | number[])[] = typeof p === 'string' ? [p] : typeof p[0] === 'number' ? [p as number[]] : (p as (string | number[])[]);
  const prompts = list.map((x) => (typeof x === 'string' ? ctx.tokenizer.encode(x, { addSpecial: true }) : x));
  prompts.forEach((ids) => {
    if (ids.length === 0) throw badParam('prompt', 'the prompt is empty');
    const bad = ids.find((id) => id >= ctx.tokenizer.vocabSize);
    if (bad !== undefined) throw badParam('prompt', `token id ${bad} is outside the vocabulary (size ${ctx.tokenizer.vocabSize})`);
  });
  return { kind: 'completion', body, prompts, maxTokens: body.max_tokens ?? 16, logprobs: body.logprobs ?? null, promptParam: 'prompt' };
}

function prepareChat(ctx: GenerateContext, raw: unknown): Prepared {
  const body = parseBody(chatSchema, raw);
  const messages = body.messages.map((m) => ({ ...m, content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((part) => part.text).join('') }));
  if (ctx.tokenizer.chatTemplate === null) {
    throw badParam('messages', 'this model has no chat template (tokenizer_config.json chat_template); use /v1/completions with a plain prompt');
  }
  let text: string;
  try {
    text = ctx.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
  } catch (err) {
    throw badParam('messages', (err as Error).message);
  }
  // The template writes any bos itself, as transformers' apply_chat_template(tokenize=True) assumes.
  const prompt = ctx.tokenizer.encode(text);
  const top = body.top_logprobs ?? null;
  if (top !== null && !body.logprobs) throw badParam('top_logprobs', 'top_logprobs needs logprobs: true');
  return { kind: 'chat', body, prompts: [prompt], maxTokens: body.max_completion_tokens ?? body.max_tokens, logprobs: body.logprobs ? (top ?? 0) : null, promptParam: 'messages' };
}

export async function handleGenerate(ctx: GenerateContext, kind: Kind, raw: unknown, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const p = kind === 'chat' ? prepareChat(ctx, raw) : prepareCompletion(ctx, raw);
  const { body } = p;
  if (!ctx.models.includes(body.model)) throw unknownModel(body.model, ctx.models);
  const n = body.n ?? 1;
  if (n > ctx.maxBatch) throw badParam('n', `n (${n}) is larger than the server's --max-batch (${ctx.maxBatch})`);
  const maxTokens = p.prompts.map((ids) => maxTokensOf(p.maxTokens, ids.length, ctx.maxModelLen, p.promptParam));
  const stream = body.stream === true;
  const includeUsage = stream && body.stream_options?.include_usage === true;
  const out = new ResponseWriter(kind, body.model, ctx.tokenizer);

  // Cancel on disconnect: 'close' before the response ended means the client went away.
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableEnded) abort.abort();
  });
  const send = (obj: unknown) => res.write(`data: ${JSON.stringify(obj)}\n\n`);
  const offsets = new Map<number, number>();
  const requests = p.prompts.map((prompt, i): GenerationRequest => ({
    model: body.model,
    prompt,
    maxTokens: maxTokens[i],
    n,
    sampling: samplingOf(body, ctx.defaults),
    stop: stopsOf(body),
    logprobs: p.logprobs,
    ignoreEos: body.ignore_eos === true,
    signal: abort.signal,
    ...(stream
      ? {
          onDelta: (c, text, tokens) => {
            const index = i * n + c;
            if (kind === 'chat' && !offsets.has(index)) send(out.chunk(index, { role: true, text: '' }, includeUsage));
            const at = offsets.get(index) ?? 0;
            offsets.set(index, at + text.length);
            if (text || (p.logprobs !== null && tokens.length > 0)) send(out.chunk(index, { text, tokens: p.logprobs === null ? null : tokens, textOffset: at }, includeUsage));
          },
          onFinish: (c, reason) => {
            if (reason !== 'abort') send(out.chunk(i * n + c, { finish: reason, ...(kind === 'chat' ? {} : { text: '' }) }, includeUsage));
          },
        }
      : {}),
  }));
  // Queued before the stream starts, so a full queue is still a 429 and not an in-band error.
  const pending = ctx.engine.generateAll(requests);
  if (stream) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
  }
  const results = await Promise.all(pending);
  if (abort.signal.aborted) return;
  const promptTokens = results.reduce((a, r) => a + r.promptTokens, 0);
  const completionTokens = results.reduce((a, r) => a + r.completionTokens, 0);
  const u = usage(promptTokens, completionTokens);
  if (stream) {
    if (includeUsage) send(out.usageChunk(u));
    res.end('data: [DONE]\n\n');
    return;
  }
  const choices: { index: number; result: ChoiceResult }[] = results.flatMap((r, i) => r.choices.map((result, c) => ({ index: i * n + c, result })));
  const json = JSON.stringify(out.body(choices, u));
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
  res.end(json);
}
