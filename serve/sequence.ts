// What a generation request is, and one of its `n` choices as it runs: its sampler, its text, its
// token log-probabilities and why it ended.
import { logprobsOf, Sampler, type SamplingParams, type TokenLogprob } from './sampling.ts';
import { TextStream } from './text-stream.ts';
import type { TextTokenizer } from '../model/hf/tokenizer.ts';

export type FinishReason = 'stop' | 'length' | 'abort';

export interface TokenInfo {
  id: number;
  logprob: number;
  top: TokenLogprob[];
}

export interface GenerationRequest {
  /** The served model name: the base or an adapter. */
  model: string;
  prompt: number[];
  maxTokens: number;
  n: number;
  sampling: SamplingParams;
  stop: string[];
  /** How many alternatives per token to return log-probabilities for; null = no log-probabilities. */
  logprobs: number | null;
  /** Keep going past the EOS token (vLLM's ignore_eos; benchmarks and tests). */
  ignoreEos?: boolean;
  /** Called as text becomes safe to send (streaming). */
  onDelta?: (choice: number, text: string, tokens: TokenInfo[]) => void;
  onFinish?: (choice: number, reason: FinishReason) => void;
  /** Called for every token chosen, printable or not (time to first token). */
  onToken?: (choice: number) => void;
  signal?: AbortSignal;
}

export interface ChoiceResult {
  text: string;
  tokenIds: number[];
  logprobs: TokenInfo[] | null;
  finishReason: FinishReason;
}

export interface GenerationResult {
  choices: ChoiceResult[];
  promptTokens: number;
  completionTokens: number;
}

export class Sequence {
  readonly tokenIds: number[] = [];
  readonly tokens: TokenInfo[] = [];
  finish: FinishReason | null = null;
  private readonly sampler: Sampler;
  private readonly text: TextStream;
  /** Tokens chosen since the last delta (a delta waits for a whole character). */
  private unsent: TokenInfo[] = [];

  constructor(
    readonly req: GenerationRequest,
    readonly choice: number,
    tokenizer: TextTokenizer,
    private readonly eos: ReadonlySet<number>,
    private readonly maxLen: number,
  ) {
    this.sampler = new Sampler(req.sampling, req.prompt, choice);
    this.text = new TextStream(tokenizer, req.stop);
  }

  get last(): number {
    return this.tokenIds[this.tokenIds.length - 1];
  }

  /** Picks the next token from logits[off ..] and records it; returns false once the choice is done. */
  accept(logits: Float32Array, off: number, vocab: number): boolean {
    const id = this.sampler.next(logits, off, vocab);
    this.tokenIds.push(id);
    this.req.onToken?.(this.choice);
    const lp = this.req.logprobs === null ? null : logprobsOf(logits, off, vocab, id, this.req.logprobs);
    const info: TokenInfo = { id, logprob: lp?.chosen ?? 0, top: lp?.top ?? [] };
    if (lp) this.tokens.push(info);
    let delta = '';
    if (this.eos.has(id) && !this.req.ignoreEos) this.finish = 'stop';
    else {
      this.unsent.push(info);
      delta = this.text.push(id);
      if (this.text.stopped) this.finish = 'stop';
    }
    if (!this.finish && (this.tokenIds.length >= this.req.maxTokens || this.req.prompt.length + this.tokenIds.length >= this.maxLen)) this.finish = 'length';
    if (this.finish) delta += this.text.flush();
    if (delta || this.finish) {
      this.req.onDelta?.(this.choice, delta, this.unsent);
      this.unsent = [];
    }
    if (this.finish) this.req.onFinish?.(this.choice, this.finish);
    return this.finish === null;
  }

  abort(): void {
    if (this.finish) return;
    this.finish = 'abort';
    this.req.onFinish?.(this.choice, 'abort');
  }

  result(): ChoiceResult {
    return { text: this.text.full, tokenIds: this.tokenIds, logprobs: this.req.logprobs === null ? null : this.tokens, finishReason: this.finish ?? 'abort' };
  }
}
