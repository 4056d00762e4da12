// The sampling knobs on hand-made logits: penalties move the choice, top-k/top-p narrow it, a seed
// fixes it, and log-probabilities are a log-softmax.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { logprobsOf, Sampler, type SamplingParams } from '../serve/sampling.ts';

const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1, seed: null };
const logits = Float32Array.of(2, 1.9, 0, -1);

describe('sampler', () => {
  it('greedy repeats the best token; penalties make it move on', () => {
    const plain = new Sampler(GREEDY, [], 0);
    assert.deepEqual([plain.next(logits, 0, 4), plain.next(logits, 0, 4)], [0, 0]);
    const frequency = new Sampler({ ...GREEDY, frequencyPenalty: 0.5 }, [], 0);
    assert.deepEqual([frequency.next(logits, 0, 4), frequency.next(logits, 0, 4)], [0, 1]);
    const presence = new Sampler({ ...GREEDY, presencePenalty: 0.2 }, [], 0);
    assert.deepEqual([presence.next(logits, 0, 4), presence.next(logits, 0, 4)], [0, 1]);
    // Token 0 is in the prompt: 2 / 1.1 < 1.9.
    const repetition = new Sampler({ ...GREEDY, repetitionPenalty: 1.1 }, [0], 0);
    assert.equal(repetition.next(logits, 0, 4), 1);
  });

  it('top-k 1 and a tiny top-p are greedy at any temperature; a seed fixes the draws', () => {
    const hot = { ...GREEDY, temperature: 2, seed: 3 };
    const k1 = new Sampler({ ...hot, topK: 1 }, [], 0);
    const p0 = new Sampler({ ...hot, topP: 0.01 }, [], 0);
    for (let i = 0; i < 20; i++) {
      assert.equal(k1.next(logits, 0, 4), 0);
      assert.equal(p0.next(logits, 0, 4), 0);
    }
    const draws = (seed: number, stream: number) => {
      const s = new Sampler({ ...hot, seed }, [], stream);
      return Array.from({ length: 30 }, () => s.next(logits, 0, 4));
    };
    assert.deepEqual(draws(3, 0), draws(3, 0));
    assert.notDeepEqual(draws(3, 0), draws(3, 1));
    assert.ok(new Set(draws(3, 0)).size >= 3, 'a hot sampler draws several tokens');
  });

  it('log-probabilities are the log-softmax, best first', () => {
    const lp = logprobsOf(logits, 0, 4, 2, 2);
    const lse = Math.log([...logits].reduce((a, x) => a + Math.exp(x), 0));
    assert.ok(Math.abs(lp.chosen - (0 - lse)) < 1e-9);
    assert.deepEqual(lp.top.map((t) => t.id), [0, 1]);
    assert.ok(Math.abs(lp.top[1].logprob - (Math.fround(1.9) - lse)) < 1e-9);
  });
});
