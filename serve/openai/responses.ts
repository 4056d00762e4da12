// Response bodies and stream chunks of the two generation endpoints, in OpenAI's shapes.
import type { TextTokenizer } from '../../model/hf/tokenizer.ts';
import type { ChoiceResult, FinishReason, TokenInfo } from '../sequence.ts';

export type Kind = 'chat' | 'completion';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usage(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

const finishOf = (r: FinishReason | null) => (r === 'abort' ? null : r);

export class ResponseWriter {
  readonly id: string;
  readonly created = Math.floor(Date.now() / 1000);

  constructor(readonly kind: Kind, readonly model: string, private readonly tokenizer: TextTokenizer) {
    this.id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${crypto.randomUUID().replaceAll('-', '')}`;
  }

  /** The whole response of a non-streamed request. */
  body(choices: { index: number; result: ChoiceResult }[], u: Usage) {
    return {
      id: this.id,
      object: this.kind === 'chat' ? 'chat.completion' : 'text_completion',
      created: this.created,
      model: this.model,
      choices: choices.map(({ index, result }) =>
        this.kind === 'chat'
          ? { index, message: { role: 'assistant', content: result.text }, logprobs: this.logprobs(result.logprobs, 0), finish_reason: finishOf(result.finishReason) }
          : { index, text: result.text, logprobs: this.logprobs(result.logprobs, 0), finish_reason: finishOf(result.finishReason) },
      ),
      usage: u,
    };
  }

  /** One streamed chunk: a text delta, the assistant role (chat, first), or the finish reason. */
  chunk(index: number, delta: { text?: string; role?: boolean; tokens?: TokenInfo[] | null; finish?: FinishReason; textOffset?: number }, withUsage: boolean) {
    const logprobs = delta.tokens && delta.tokens.length > 0 ? this.logprobs(delta.tokens, delta.textOffset ?? 0) : null;
    const finish_reason = delta.finish ? finishOf(delta.finish) : null;
    const choice =
      this.kind === 'chat'
        ? { index, delta: { ...(delta.role ? { role: 'assistant' } : {}), ...(delta.text !== undefined ? { content: delta.text } : {}) }, logprobs, finish_reason }
        : { index, text: delta.text ?? '', logprobs, finish_reason };
    return { ...this.head(), choices: [choice], ...(withUsage ? { usage: null } : {}) };
  }

  /** The extra last chunk of stream_options.include_usage. */
  usageChunk(u: Usage) {
    return { ...this.head(), choices: [], usage: u };
  }

  private head() {
    return { id: this.id, object: this.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created: this.created, model: this.model };
  }

  private logprobs(tokens: readonly TokenInfo[] | null, textOffset: number) {
    if (!tokens) return null;
    const text = (id: number) => this.tokenizer.decode([id]);
    if (this.kind === 'chat') {
      const entry = (id: number, logprob: number) => {
        const token = text(id);
        return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
      };
      return { content: tokens.map((t) => ({ ...entry(t.id, t.logprob), top_logprobs: t.top.map((x) => entry(x.id, x.logprob)) })) };
    }
    const offsets: number[] = [];
    let at = textOffset;
    for (const t of tokens) {
      offsets.push(at);
      at += text(t.id).length;
    }
    return {
      tokens: tokens.map((t) => text(t.id)),
      token_logprobs: tokens.map((t) => t.logprob),
      top_logprobs: tokens.map((t) => Object.fromEntries(t.top.map((x) => [text(x.id), x.logprob]))),
      text_offset: offsets,
    };
  }
}
