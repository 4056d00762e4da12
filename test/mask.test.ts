// The attention mask: causal, and Mistral's sliding window.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { causalMask } from '../model/llama/program.ts';

const allowed = (m: Float32Array, seq: number) => Array.from({ length: seq }, (_, i) => Array.from({ length: seq }, (_, j) => (m[i * seq + j] === 0 ? 1 : 0)).join('')).join(' ');

test('causal mask lets position i see keys 0..i', () => {
  assert.equal(allowed(causalMask(4), 4), '1000 1100 1110 1111');
});

test('a sliding window of w lets position i see the last w keys only', () => {
  assert.equal(allowed(causalMask(5, 2), 5), '10000 11000 01100 00110 00011');
  assert.equal(allowed(causalMask(3, 8), 3), allowed(causalMask(3), 3));
});
