// The WebAssembly AdamW kernel (model/train/adamw-wasm.ts) is the JS loop made faster, not changed:
// parameters and moments after several updates are bitwise equal to the JS path's, across tensor
// lengths with and without a tail past the last multiple of 4, decay and no-decay names, clipping
// scales, moments restored from a checkpoint and memory growth between updates.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AdamW, defaultAdamWKernel, sumOfSquares } from '../model/train/adamw.ts';
import { AdamWKernel } from '../model/train/adamw-wasm.ts';
import { Rng } from '../common/rng.ts';

const OPTS = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

function random(n: number, seed: number, scale: number): Float32Array {
  const rng = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng.nextFloat() * 2 - 1) * scale;
  // Exact zeros, subnormals and a large value: the kernel must round them as the JS loop does.
  if (n > 8) a.set([0, -0, 1e-40, -3e-39, 65504, 1e-30], 2);
  return a;
}

function sameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) assert.fail(`${what}[${i}]: kernel ${a[i]} vs JS ${b[i]}`);
}

const TENSORS = [
  ['model.layers.0.self_attn.q_proj.weight', 4096],
  ['model.layers.0.mlp.down_proj.weight', 5003], // a tail of 3 past the last multiple of 4
  ['model.layers.0.input_layernorm.weight', 2049], // no decay
  ['model.norm.weight', 64], // below the kernel's size threshold: the JS loop
  ['model.embed_tokens.weight', 70001], // several chunks of the kernel's scratch space, and a tail
] as const;

test('AdamW: the WebAssembly kernel gives bitwise the JS loop\'s parameters and moments', () => {
  const wasm = new AdamW({ ...OPTS, kernel: 'wasm' });
  const js = new AdamW({ ...OPTS, kernel: 'js' });
  assert.equal(wasm.kernelInUse, 'wasm', 'this Node has WebAssembly SIMD: the kernel must be the one tested');
  assert.equal(js.kernelInUse, 'js');
  const pw = TENSORS.map(([, n], i) => random(n, i + 1, 0.05));
  const pj = pw.map((p) => p.slice());
  for (let step = 0; step < 5; step++) {
    const scale = step === 2 ? 0.37 : 1;
    const lr = 1e-3 * (step + 1);
    TENSORS.forEach(([name, n], i) => {
      const g = random(n, 100 * step + i, step === 3 ? 1e-20 : 0.02);
      wasm.update(name, pw[i], g, lr, scale);
      js.update(name, pj[i], g, lr, scale);
    });
  }
  TENSORS.forEach(([name], i) => {
    sameBits(pw[i], pj[i], `${name} param`);
    const a = wasm.state.get(name)!;
    const b = js.state.get(name)!;
    assert.equal(a.t, b.t);
    sameBits(a.m, b.m, `${name} exp_avg`);
    sameBits(a.v, b.v, `${name} exp_avg_sq`);
  });
});

test('AdamW: moments restored from a checkpoint move into the kernel and continue bitwise equal', () => {
  const name = 'model.layers.1.mlp.up_proj.weight';
  const n = 3001;
  const restored = () => ({ m: random(n, 7, 1e-3), v: random(n, 8, 1e-6).map(Math.abs), t: 11 });
  const wasm = new AdamW({ ...OPTS, kernel: 'wasm' });
  const js = new AdamW({ ...OPTS, kernel: 'js' });
  wasm.state.set(name, restored());
  js.state.set(name, restored());
  const pw = random(n, 9, 0.05);
  const pj = pw.slice();
  // Other tensors allocated in between make the kernel's memory grow: earlier moments stay readable.
  for (let step = 0; step < 3; step++) {
    wasm.update(name, pw, random(n, 20 + step, 0.01), 1e-3);
    js.update(name, pj, random(n, 20 + step, 0.01), 1e-3);
    wasm.update(`big.${step}`, new Float32Array(40_000), random(40_000, step, 0.01), 1e-3);
  }
  sameBits(pw, pj, 'param');
  assert.equal(wasm.state.get(name)!.t, 14);
  sameBits(wasm.state.get(name)!.m, js.state.get(name)!.m, 'exp_avg');
  sameBits(wasm.state.get(name)!.v, js.state.get(name)!.v, 'exp_avg_sq');
});

test('AdamW: tensors whose moments or scratch space do not fit the kernel\'s memory take the JS loop, same results', () => {
  // 8 pages (512 KiB): the first tensor's moments (2 × 160 KB) fit, its scratch (256 KiB) does not
  // after them; the second tensor's moments do not fit at all.
  const capped = new AdamW(OPTS, AdamWKernel.create(8 * 65536));
  const js = new AdamW({ ...OPTS, kernel: 'js' });
  const names = ['a.weight', 'b.weight'];
  const pc = names.map((_, i) => random(40_000, i, 0.05));
  const pj = pc.map((p) => p.slice());
  for (let step = 0; step < 3; step++) {
    names.forEach((n, i) => {
      const g = random(40_000, 10 * step + i, 0.01);
      capped.update(n, pc[i], g, 1e-3);
      js.update(n, pj[i], g, 1e-3);
    });
  }
  assert.equal(capped.state.get('a.weight')!.constructor.name, 'KernelMoments', 'the first tensor\'s moments are in the kernel\'s memory');
  assert.equal(capped.state.get('b.weight')!.constructor.name, 'Object', 'the second tensor\'s moments stayed in JS');
  names.forEach((n, i) => {
    sameBits(pc[i], pj[i], `${n} param`);
    sameBits(capped.state.get(n)!.m, js.state.get(n)!.m, `${n} exp_avg`);
  });
});

test('the kernel\'s sum of squares adds in the JS order: the same double', () => {
  const k = AdamWKernel.create()!;
  const grads = [random(4099, 1, 0.3), random(17, 2, 2), random(1, 3, 5), random(80_001, 4, 1e-3)];
  assert.equal(k.sumOfSquares(grads), sumOfSquares(grads));
  assert.equal(new AdamW({ ...OPTS, kernel: 'wasm' }).gradSumOfSquares(grads), sumOfSquares(grads));
});

test('PROPIPE_ADAMW picks the loop and names the allowed values when wrong', () => {
  const saved = process.env.PROPIPE_ADAMW;
  try {
    process.env.PROPIPE_ADAMW = 'js';
    assert.equal(defaultAdamWKernel(), 'js');
    assert.equal(new AdamW(OPTS).kernelInUse, 'js');
    process.env.PROPIPE_ADAMW = 'simd';
    assert.throws(() => new AdamW(OPTS), /PROPIPE_ADAMW='simd' is not one of wasm, js/);
    delete process.env.PROPIPE_ADAMW;
    assert.equal(new AdamW(OPTS).kernelInUse, 'wasm');
  } finally {
    if (saved === undefined) delete process.env.PROPIPE_ADAMW;
    else process.env.PROPIPE_ADAMW = saved;
  }
});
