// Next-token choice from one row of logits, in the order vLLM and transformers apply the knobs:
// repetition penalty, presence/frequency penalties, temperature, top-k, top-p, then a draw from the
// row's own seeded generator (so a seed gives the same text however requests are batched).
import { Rng } from '../common/rng.ts';

export interface SamplingParams {
  temperature: number;
  topP: number;
  /** 0 = all tokens. */
  topK: number;
  presencePenalty: number;
  frequencyPenalty: number;
  /** 1 = off; > 1 discourages tokens already in the prompt or output. */
  repetitionPenalty: number;
  seed: number | null;
}

export interface TokenLogprob {
  id: number;
  logprob: number;
}

/** log-softmax of logits[off .. off + vocab) for the chosen token and the `top` most likely ones. */
export function logprobsOf(logits: Float32Array, off: number, vocab: number, chosen: number, top: number): { chosen: number; top: TokenLogprob[] } {
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) max = Math.max(max, logits[off + i]);
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[off + i] - max);
  const lse = max + Math.log(sum);
  return { chosen: logits[off + chosen] - lse, top: topIndices(logits, off, vocab, top).map((id) => ({ id, logprob: logits[off + id] - lse })) };
}

function topIndices(values: ArrayLike<number>, off: number, n: number, k: number): number[] {
  const best: number[] = [];
  if (k <= 0) return best;
  // Insertion into a short list beats sorting the vocabulary; a long list is sorted once.
  if (k > 64) {
    const all = Array.from({ length: n }, (_, i) => i);
    return all.sort((a, b) => values[off + b] - values[off + a]).slice(0, k);
  }
  for (let i = 0; i < n; i++) {
    const v = values[off + i];
    if (best.length === k && v <= values[off + best[k - 1]]) continue;
    let at = best.length === k ? k - 1 : best.length;
    if (best.length < k) best.push(i);
    while (at > 0 && values[off + best[at - 1]] < v) {
      best[at] = best[at - 1];
      at--;
    }
    best[at] = i;
  }
  return best;
}

export class Sampler {
  private readonly rng: Rng | null;
  /** How often each token occurs in the output so far (presence/frequency penalties). */
  private readonly counts = new Map<number, number>();
  /** Tokens of prompt and output (repetition penalty). */
  private readonly seen: Set<number>;

  constructor(private readonly p: SamplingParams, prompt: readonly number[], stream: number) {
    this.rng = p.temperature > 0 ? (p.seed === null ? new Rng((Math.random() * 2 ** 32) >>> 0) : Rng.derive(p.seed, stream)) : null;
    this.seen = new Set(prompt);
  }

  /** Chooses the next token from logits[off .. off + vocab). */
  next(logits: Float32Array, off: number, vocab: number): number {
    const z = Float64Array.from(logits.subarray(off, off + vocab));
    const { presencePenalty: pp, frequencyPenalty: fp, repetitionPenalty: rp } = this.p;
    if (rp !== 1) for (const id of this.seen) z[id] = z[id] > 0 ? z[id] / rp : z[id] * rp;
    for (const [id, c] of this.counts) z[id] -= pp + fp * c;
    let choice: number;
    if (!this.rng) choice = topIndices(z, 0, vocab, 1)[0];
    else choice = this.draw(z, vocab);
    this.counts.set(choice, (this.counts.get(choice) ?? 0) + 1);
    this.seen.add(choice);
    return choice;
  }

  private draw(z: Float64Array, vocab: number): number {
    const k = this.p.topK > 0 ? Math.min(this.p.topK, vocab) : vocab;
    const ids = topIndices(z, 0, vocab, k);
    const t = this.p.temperature;
    const w = ids.map((id) => Math.exp((z[id] - z[ids[0]]) / t));
    const total = w.reduce((a, b) => a + b, 0);
    // Nucleus: the smallest prefix of the sorted tokens whose mass reaches top_p.
    let keep = ids.length;
    if (this.p.topP < 1) {
      let mass = 0;
      for (let i = 0; i < ids.length; i++) {
        mass += w[i] / total;
        if (mass >= this.p.topP) {
          keep = i + 1;
          break;
        }
      }
    }
    const kept = w.slice(0, keep).reduce((a, b) => a + b, 0);
    let u = this.rng!.nextFloat() * kept;
    for (let i = 0; i < keep; i++) {
      u -= w[i];
      if (u <= 0) return ids[i];
    }
    return ids[keep - 1];
  }
}
