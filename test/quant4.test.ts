// 4-bit block quantization: the host round trip, the quantized linear in ONNX Runtime (MatMulNBits and
// DequantizeLinear) against a float MatMul over the same dequantized weight, its input gradient, and a
// whole model (QLoRA-style and with one trainable block) against the float model it approximates.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { backward } from '../model/autodiff/backward.ts';
import { parseConfig } from '../model/hf/config.ts';
import { Graph } from '../model/graph/graph.ts';
import { CompiledGraph } from '../model/graph/session.ts';
import { createRandomModel } from '../model/hf/init.ts';
import { loraNames, type LoraSpec, type QuantizedMatMul } from '../model/llama/params.ts';
import { RangeProgram, type Batch } from '../model/llama/program.ts';
import { wholeModel, type BlockRange } from '../model/llama/range-graph.ts';
import { initLora } from '../model/train/lora.ts';
import { paramSpecs } from '../model/llama/param-specs.ts';
import { openPretrained } from '../model/hf/pretrained.ts';
import { dequantize4, quantize4, quantizedBytes } from '../model/quant/quant4.ts';
import { Quant4Weights, type Quant4Kernel } from '../model/quant/quant4-store.ts';
import { zeroPointAt, type Quantized4 } from '../model/graph/matmul-nbits.ts';
import { Rng } from '../common/rng.ts';
import { maxRelError } from './support/compare.ts';

function randomWeight(rng: Rng, out: number, inp: number): Float32Array {
  // Rows of very different magnitude, so that per-block scales matter.
  const w = new Float32Array(out * inp);
  for (let o = 0; o < out; o++) {
    const std = 0.01 * 2 ** (o % 7);
    for (let i = 0; i < inp; i++) w[o * inp + i] = rng.nextGaussian() * std;
  }
  return w;
}

/** Max over blocks of (max |w - wq| in the block) - scale/2; <= 0 when every block is within bound. */
function worstBlockExcess(w: Float32Array, wq: Float32Array, q: Quantized4): number {
  let worst = -Infinity;
  for (let o = 0; o < q.out; o++) {
    for (let b = 0; b < q.blocks; b++) {
      let err = 0;
      for (let i = b * q.blockSize; i < Math.min(q.inp, (b + 1) * q.blockSize); i++) err = Math.max(err, Math.abs(w[o * q.inp + i] - wq[o * q.inp + i]));
      const s = q.scales[o * q.blocks + b];
      worst = Math.max(worst, err - (s / 2 + 1e-6 * s + 1e-12));
    }
  }
  return worst;
}

const SHAPES = [
  { out: 24, inp: 64, blockSize: 32 },
  { out: 10, inp: 96, blockSize: 32 }, // odd number of blocks: zero points do not fill whole bytes
  { out: 7, inp: 100, blockSize: 32 }, // ragged last block
  { out: 5, inp: 48, blockSize: 16 },
  { out: 6, inp: 30, blockSize: 6 }, // a block size MatMulNBits does not take
];

test('quantize4 / dequantize4: every block within half a step of the original', () => {
  const rng = new Rng(3);
  for (const s of SHAPES) {
    const w = randomWeight(rng, s.out, s.inp);
    for (const symmetric of [false, true]) {
      const q = quantize4(w, s.out, s.inp, { blockSize: s.blockSize, symmetric });
      assert.equal(q.blocks, Math.ceil(s.inp / s.blockSize));
      assert.equal(q.codes.length, s.out * q.blocks * (s.blockSize / 2));
      const excess = worstBlockExcess(w, dequantize4(q), q);
      assert.ok(excess <= 0, `${JSON.stringify(s)} symmetric=${symmetric}: error exceeds scale/2 by ${excess}`);
      for (let o = 0; o < s.out; o++) for (let b = 0; b < q.blocks; b++) {
        const zp = zeroPointAt(q, o, b);
        assert.ok(symmetric ? zp === 8 : zp >= 0 && zp <= 15);
      }
    }
  }
});

test('quantize4: zero and constant blocks are exact; asymmetric beats symmetric on average', () => {
  const w = new Float32Array(4 * 32);
  w.fill(0.25, 32, 64);
  w.fill(-3, 64, 96);
  for (const symmetric of [false, true]) {
    const wq = dequantize4(quantize4(w, 4, 32, { symmetric }));
    for (let i = 0; i < 96; i++) assert.equal(wq[i], w[i], `symmetric=${symmetric} index ${i}`);
  }
  const rng = new Rng(5);
  const big = randomWeight(rng, 64, 256);
  const rms = (symmetric: boolean) => {
    const wq = dequantize4(quantize4(big, 64, 256, { symmetric }));
    let s = 0;
    for (let i = 0; i < big.length; i++) s += (big[i] - wq[i]) ** 2 / (0.01 * 2 ** (Math.floor(i / 256) % 7)) ** 2;
    return Math.sqrt(s / big.length);
  };
  assert.ok(rms(false) < rms(true), `asymmetric ${rms(false)} vs symmetric ${rms(true)}`);
});

/** Host x·Wqᵀ and dY·Wq in float64. */
function hostMatMulT(x: Float32Array, w: Float32Array, m: number, out: number, inp: number): Float32Array {
  const y = new Float32Array(m * out);
  for (let r = 0; r < m; r++) for (let o = 0; o < out; o++) {
    let s = 0;
    for (let i = 0; i < inp; i++) s += x[r * inp + i] * w[o * inp + i];
    y[r * out + o] = s;
  }
  return y;
}

function hostMatMul(dy: Float32Array, w: Float32Array, m: number, out: number, inp: number): Float32Array {
  const dx = new Float32Array(m * inp);
  for (let r = 0; r < m; r++) for (let i = 0; i < inp; i++) {
    let s = 0;
    for (let o = 0; o < out; o++) s += dy[r * out + o] * w[o * inp + i];
    dx[r * inp + i] = s;
  }
  return dx;
}

const KERNEL_CASES: { kernel: Quant4Kernel; symmetric: boolean; out: number; inp: number; blockSize: number }[] = [
  { kernel: 'matmulnbits', symmetric: false, out: 40, inp: 64, blockSize: 32 },
  { kernel: 'matmulnbits', symmetric: true, out: 40, inp: 64, blockSize: 32 },
  { kernel: 'matmulnbits', symmetric: false, out: 24, inp: 96, blockSize: 32 },
  { kernel: 'matmulnbits', symmetric: false, out: 24, inp: 80, blockSize: 32 },
  { kernel: 'matmulnbits', symmetric: true, out: 16, inp: 48, blockSize: 16 },
  { kernel: 'dequantize', symmetric: false, out: 40, inp: 64, blockSize: 32 },
  { kernel: 'dequantize', symmetric: true, out: 24, inp: 80, blockSize: 32 },
  { kernel: 'dequantize', symmetric: false, out: 12, inp: 30, blockSize: 6 },
];

for (const c of KERNEL_CASES) {
  const label = `${c.kernel} ${c.symmetric ? 'symmetric' : 'asymmetric'} W [${c.out}, ${c.inp}] block ${c.blockSize}`;
  test(`quantized linear (${label}): x·Wqᵀ and d(x) = dY·Wq match the host`, async () => {
    const rng = new Rng(c.out * 1000 + c.inp);
    const [b, t] = [2, 3];
    const w = randomWeight(rng, c.out, c.inp);
    const store = new Quant4Weights(() => w, c.blockSize, { kernel: c.kernel, symmetric: c.symmetric });
    const g = new Graph('qlinear');
    const x = g.input('x', 'float32', ['batch', 'seq', c.inp]);
    const q = store.matmul(g, x, 'w', c.out, c.inp);
    const y = g.rename(q.y, 'y');
    assert.deepEqual(g.info(y).shape, ['batch', 'seq', c.out]);
    const dyIn = g.input('dy', 'float32', ['batch', 'seq', c.out]);
    const grads = backward(g, [{ value: y, grad: dyIn }], [x]);
    g.output(y);
    g.output(g.rename(grads.get(x)!, 'dx'));
    const op = c.kernel === 'matmulnbits' ? 'MatMulNBits' : 'DequantizeLinear';
    assert.ok(g.nodes.some((n) => n.op === op), `${op} expected in the graph`);

    const xv = Float32Array.from({ length: b * t * c.inp }, () => rng.nextGaussian());
    const dyv = Float32Array.from({ length: b * t * c.out }, () => rng.nextGaussian());
    const session = await CompiledGraph.create(g);
    const codes = Object.fromEntries(q.inputs.map((n) => [n, store.tensor(n)]));
    const out = await session.run({ x: { dtype: 'float32', shape: [b, t, c.inp], data: xv }, dy: { dtype: 'float32', shape: [b, t, c.out], data: dyv }, ...codes });
    await session.release();
    const wq = dequantize4(quantize4(w, c.out, c.inp, { blockSize: c.blockSize, symmetric: c.symmetric }));
    const yErr = maxRelError(out.y.data as Float32Array, hostMatMulT(xv, wq, b * t, c.out, c.inp));
    const dxErr = maxRelError(out.dx.data as Float32Array, hostMatMul(dyv, wq, b * t, c.out, c.inp));
    assert.ok(yErr <= 1e-5, `y: ${yErr}`);
    assert.ok(dxErr <= 1e-5, `dx: ${dxErr}`);
  });
}

test('Quant4Weights quantizes each weight once; graphs read it through inputs declared once per graph', () => {
  const loads: string[] = [];
  const store = new Quant4Weights((name) => (loads.push(name), new Float32Array(8 * 32).fill(0.5)), 32);
  const g = new Graph('twice');
  const x = g.input('x', 'float32', [2, 32]);
  const first = store.matmul(g, x, 'w', 8, 32);
  const inputs = g.inputs.length;
  store.matmul(g, x, 'w', 8, 32);
  assert.equal(g.inputs.length, inputs);
  assert.deepEqual(first.inputs, ['w.q4', 'w.q4_scales', 'w.q4_zero_points']);
  assert.ok(first.inputs.every((n) => g.inputs.includes(n)));
  // Only small constants (shapes, the nibble divisor) are initializers.
  for (const [name, init] of g.initializers) assert.ok(init.data.length <= 4, `${name}: ${init.data.length} values`);
  const other = new Graph('other');
  store.matmul(other, other.input('x', 'float32', [2, 32]), 'w', 8, 32);
  assert.deepEqual(loads, ['w']);
  assert.equal(store.weights, 1);
  assert.equal(store.bytes, 8 * 16 + 8 * 4 + 8);
  assert.throws(() => store.matmul(g, x, 'w', 4, 64), /quantized as \[8, 32\]/);
  assert.throws(() => new Quant4Weights(() => new Float32Array(0), 24), /power-of-two/);
  assert.equal(store.retainOnly(new Set()), 1);
  assert.throws(() => store.tensor('w.q4'), /not held in this process/);
});

// ---- whole model -----------------------------------------------------------------------------------

const TINY = { layers: 2, hidden: 96, heads: 4, kvHeads: 2, intermediate: 176, vocab: 300, seed: 9, initStd: 0.3 };

async function tinyModel() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-quant4-'));
  await createRandomModel(dir, TINY);
  const model = openPretrained(dir);
  const rng = new Rng(17);
  const [batch, seq] = [2, 12];
  const ids = BigInt64Array.from({ length: batch * seq }, () => BigInt(Math.floor(rng.nextFloat() * TINY.vocab)));
  const b: Batch = { batch, seq, inputIds: ids, labels: ids };
  const linear = new Set(paramSpecs(model.config).filter((s) => s.kind === 'linear_weight').map((s) => s.name));
  // The float model that a quantized run must reproduce: every linear weight replaced by its Wq.
  const dequantized = (name: string) => {
    const w = model.load(name);
    if (!linear.has(name)) return w;
    const [out, inp] = paramSpecs(model.config).find((s) => s.name === name)!.shape;
    return dequantize4(quantize4(w, out, inp));
  };
  // The hook, counting the linears it was asked to multiply.
  const counted = () => {
    const store = new Quant4Weights(model.load);
    const names = new Set<string>();
    const wrapped: QuantizedMatMul = { matmul: (g, x, name, out, inp) => (names.add(name), store.matmul(g, x, name, out, inp)), tensor: (n) => store.tensor(n) };
    return { hook: wrapped, names };
  };
  return { dir, model, batch: b, dequantized, rng, counted };
}

test('a quantized model: loss near the float model, LoRA gradients equal those of the float Wq model', async () => {
  const { dir, model, batch, dequantized, rng, counted } = await tinyModel();
  try {
    const config = model.config;
    const targets = new Set(['q_proj', 'v_proj', 'down_proj']);
    const adapted = paramSpecs(config).filter((s) => s.kind === 'linear_weight' && targets.has(s.name.split('.').at(-2)!));
    const lora: LoraSpec = { rank: 4, alpha: 8, linears: new Set(adapted.map((s) => s.name.slice(0, -'.weight'.length))) };
    const params = new Map<string, Float32Array>();
    for (const s of adapted) {
      const [out, inp] = s.shape;
      const ad = initLora(lora.rank, inp, out, rng);
      // B = 0 would make every A gradient zero; a small B exercises both adapters.
      for (let i = 0; i < ad.b.length; i++) ad.b[i] = rng.nextGaussian() * 0.05;
      const names = loraNames(s.name.slice(0, -'.weight'.length));
      params.set(names.a, ad.a);
      params.set(names.b, ad.b);
    }
    const trainable = new Set(params.keys());
    const common = { config, range: wholeModel(config), trainable, inputGrad: false, lora };
    const q = counted();
    const quant = await RangeProgram.create({ ...common, load: model.load, quantized: q.hook });
    const floatWq = await RangeProgram.create({ ...common, load: dequantized });
    const float = await RangeProgram.create({ ...common, load: model.load });
    assert.equal(q.names.size, 7 * config.numLayers);

    const rq = await quant.backward(batch, params, { lossScale: 1 });
    const rw = await floatWq.backward(batch, params, { lossScale: 1 });
    const rf = await float.backward(batch, params, { lossScale: 1 });
    assert.deepEqual([...quant.trainableNames].sort(), [...trainable].sort());
    const rel = Math.abs(rq.lossSum! - rf.lossSum!) / rf.lossSum!;
    assert.ok(rel < 0.03, `quantized loss ${rq.lossSum} vs float ${rf.lossSum} (${rel})`);
    assert.ok(Math.abs(rq.lossSum! - rw.lossSum!) <= 1e-4 * rw.lossSum!, `quantized ${rq.lossSum} vs float Wq ${rw.lossSum}`);
    for (const [name, gw] of rw.grads) {
      const err = maxRelError(rq.grads.get(name)!, gw);
      assert.ok(err <= 1e-4, `${name}: ${err}`);
    }
    const fwd = await quant.forward(batch, params);
    assert.ok(Math.abs(fwd.lossSum - rq.lossSum!) <= 1e-5 * rq.lossSum!);
    await Promise.all([quant.release(), floatWq.release(), float.release()]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('one trainable block above quantized frozen blocks: gradients and the input gradient cross them', async () => {
  const { dir, model, batch, dequantized, counted } = await tinyModel();
  try {
    const config = model.config;
    const top = paramSpecs(config).filter((s) => s.layer === 1).map((s) => s.name);
    const trainable = new Set(top);
    const params = new Map(top.map((n) => [n, model.load(n)]));
    // A middle rank: hidden_in -> both blocks -> loss; block 0 is frozen and quantized.
    const range: BlockRange = { start: 0, end: 2, embed: false, head: true };
    const rng = new Rng(2);
    const hidden = Float32Array.from({ length: batch.batch * batch.seq * config.hiddenSize }, () => rng.nextGaussian());
    const b = { ...batch, hidden };
    const common = { config, range, trainable, inputGrad: true };
    const q = counted();
    const quant = await RangeProgram.create({ ...common, load: model.load, quantized: q.hook });
    const floatWq = await RangeProgram.create({ ...common, load: dequantized });
    // Only the frozen block is quantized; the trainable one stays float.
    assert.deepEqual([...q.names].map((n) => n.split('.')[2]), Array(7).fill('0'));
    const rq = await quant.backward(b, params, { lossScale: 1 });
    const rw = await floatWq.backward(b, params, { lossScale: 1 });
    assert.ok(Math.abs(rq.lossSum! - rw.lossSum!) <= 1e-4 * rw.lossSum!);
    for (const [name, gw] of rw.grads) assert.ok(maxRelError(rq.grads.get(name)!, gw) <= 1e-4, name);
    const err = maxRelError(rq.hiddenGrad!, rw.hiddenGrad!);
    assert.ok(err <= 1e-4, `hidden gradient: ${err}`);
    await Promise.all([quant.release(), floatWq.release()]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('quantizedBytes: float32 vs 4-bit footprint of the frozen linear weights', () => {
  const { config } = parseConfig({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 4096, intermediate_size: 11008,
    num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, vocab_size: 32000,
  });
  const all = quantizedBytes(config);
  assert.equal(all.weights, 32 * 7);
  assert.equal(all.params, 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008));
  assert.equal(all.float32Bytes, all.params * 4);
  // Per weight: half a byte of code, 4/32 of scale, (1/2)/32 of zero point.
  assert.equal(all.quantizedBytes, all.params * (0.5 + 4 / 32 + 0.5 / 32));
  const sym = quantizedBytes(config, { symmetric: true });
  assert.equal(sym.quantizedBytes, all.params * (0.5 + 4 / 32));
  const frozenHalf = quantizedBytes(config, { frozen: (n) => Number(n.split('.')[2]) < 16 });
  assert.equal(frozenHalf.params * 2, all.params);
});
