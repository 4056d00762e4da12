import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it, mock } from 'node:test';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../model/hf/half.ts';
import { INDEX_FILE, SINGLE_FILE } from '../model/hf/safetensors-format.ts';
import { openCheckpoint, writeCheckpoint } from '../model/hf/checkpoint.ts';
import { openSafetensors } from '../model/hf/safetensors-read.ts';
import { writeSafetensors, type TensorToWrite } from '../model/hf/safetensors-write.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-st-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let seq = 0;
const tmpPath = (name: string) => path.join(root, `${seq++}-${name}`);
const tmpDir = () => {
  const d = tmpPath('dir');
  fs.mkdirSync(d);
  return d;
};

const f32 = (...xs: number[]) => new Float32Array(xs);
const bitsOf = (x: number) => new Uint32Array(f32(x).buffer)[0];
const fromBits = (b: number) => new Float32Array(new Uint32Array([b]).buffer)[0];
const toHalf = (x: number) => f32ToF16(f32(x))[0];
const toBf16 = (x: number) => f32ToBf16(f32(x))[0];
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function ramp(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (i - n / 2) * scale;
  return a;
}

// A safetensors file built by hand, so that malformed headers can be written.
function rawFile(header: unknown, dataBytes: number, opts: { lengthOverride?: bigint } = {}): string {
  const file = tmpPath('raw.safetensors');
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(opts.lengthOverride ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]));
  return file;
}

describe('half and bfloat16 conversion', () => {
  it('f16 -> f32 -> f16 is the identity on all 65536 bit patterns (NaN stays NaN)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const wide = f16ToF32(all);
    const back = f32ToF16(wide);
    for (let h = 0; h < 65536; h++) {
      const isNan = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNan) {
        assert.ok(Number.isNaN(wide[h]), `0x${h.toString(16)} should decode to NaN`);
        assert.ok((back[h] & 0x7c00) === 0x7c00 && (back[h] & 0x3ff) !== 0);
        assert.equal(back[h] & 0x8000, h & 0x8000);
      } else {
        assert.equal(back[h], h, `0x${h.toString(16)} -> ${wide[h]} -> 0x${back[h].toString(16)}`);
      }
    }
  });

  it('decodes half edge values exactly', () => {
    const dec = (h: number) => f16ToF32(new Uint16Array([h]))[0];
    assert.equal(dec(0x0001), 2 ** -24); // smallest subnormal
    assert.equal(dec(0x03ff), 1023 * 2 ** -24); // largest subnormal
    assert.equal(dec(0x0400), 2 ** -14); // smallest normal
    assert.equal(dec(0x7bff), 65504);
    assert.equal(dec(0x3c00), 1);
    assert.equal(dec(0xc000), -2);
    assert.equal(dec(0x7c00), Infinity);
    assert.equal(dec(0xfc00), -Infinity);
    assert.ok(Object.is(dec(0x8000), -0));
    assert.ok(Number.isNaN(dec(0x7e00)));
  });

  it('encodes to half with round-to-nearest-even, overflow to inf, and signed zero', () => {
    assert.equal(toHalf(65504), 0x7bff);
    assert.equal(toHalf(65519), 0x7bff); // below the halfway point
    assert.equal(toHalf(65520), 0x7c00); // halfway, ties to even = inf
    assert.equal(toHalf(1e6), 0x7c00);
    assert.equal(toHalf(-1e6), 0xfc00);
    assert.equal(toHalf(Infinity), 0x7c00);
    assert.equal(toHalf(-0), 0x8000);
    assert.equal(toHalf(1 + 2 ** -11), 0x3c00); // tie -> even (1.0)
    assert.equal(toHalf(1 + 3 * 2 ** -11), 0x3c02); // tie -> even (1 + 2^-9)
    assert.equal(toHalf(1 + 2 ** -11 + 2 ** -20), 0x3c01); // just above the tie
    assert.equal(toHalf(2 ** -24), 0x0001);
    assert.equal(toHalf(2 ** -25), 0x0000); // tie between 0 and the smallest subnormal -> 0
    assert.equal(toHalf(3 * 2 ** -25), 0x0002); // tie between 1 and 2 ulps -> 2
    assert.equal(toHalf(2 ** -25 + 2 ** -40), 0x0001);
    assert.equal(toHalf(-(2 ** -14)), 0x8400);
    assert.equal(toHalf(2 ** -14 - 2 ** -25), 0x0400); // rounds up from subnormal into the first normal
    assert.equal(toHalf(1e-10), 0);
    const nan = toHalf(NaN);
    assert.ok((nan & 0x7c00) === 0x7c00 && (nan & 0x3ff) !== 0);
  });

  it('agrees with a brute-force nearest-half search on random floats', () => {
    // Positive halves are ordered by bit pattern, so the nearest one is found by binary search.
    const dec = f16ToF32(new Uint16Array(0x7c01).map((_, i) => i));
    let state = 12345;
    const rand = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    for (let trial = 0; trial < 20000; trial++) {
      const x = fromBits(((0x30000000 + rand() * 0x18000000) >>> 0) | (rand() < 0.5 ? 0x80000000 : 0));
      const a = Math.abs(x);
      let lo = 0;
      let hi = 0x7bff;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (dec[mid] <= a) lo = mid;
        else hi = mid - 1;
      }
      let want: number;
      if (lo === 0x7bff) want = a >= 65520 ? 0x7c00 : 0x7bff;
      else {
        const dl = a - dec[lo];
        const dh = dec[lo + 1] - a;
        want = dl < dh ? lo : dh < dl ? lo + 1 : lo % 2 === 0 ? lo : lo + 1;
      }
      if (x < 0) want |= 0x8000;
      assert.equal(toHalf(x), want, `x=${x}`);
    }
  });

  it('converts bfloat16 both ways with round-to-nearest-even', () => {
    assert.equal(toBf16(1), 0x3f80);
    assert.equal(toBf16(1 + 2 ** -8), 0x3f80); // tie -> even
    assert.equal(toBf16(1 + 3 * 2 ** -8), 0x3f82); // tie -> even
    assert.equal(toBf16(1 + 2 ** -8 + 2 ** -20), 0x3f81);
    assert.equal(toBf16(-0), 0x8000);
    assert.equal(toBf16(Infinity), 0x7f80);
    assert.equal(toBf16(-Infinity), 0xff80);
    assert.equal(toBf16(fromBits(0x7f7fffff)), 0x7f80); // max float rounds to inf
    assert.equal(toBf16(fromBits(0x00010000)), 0x0001); // subnormal kept
    const nan = toBf16(NaN);
    assert.ok((nan & 0x7f80) === 0x7f80 && (nan & 0x7f) !== 0);
    // A NaN whose payload sits only in the low 16 bits must not truncate to inf (bits built in a
    // Float32Array directly, because a JS number would canonicalize the NaN).
    const lowNan = f32ToBf16(new Float32Array(new Uint32Array([0x7f800001]).buffer))[0];
    assert.ok((lowNan & 0x7f80) === 0x7f80 && (lowNan & 0x7f) !== 0, `got 0x${lowNan.toString(16)}`);
    const lowNanHalf = f32ToF16(new Float32Array(new Uint32Array([0xff800001]).buffer))[0];
    assert.ok((lowNanHalf & 0x7c00) === 0x7c00 && (lowNanHalf & 0x3ff) !== 0 && (lowNanHalf & 0x8000) !== 0);
    const back = bf16ToF32(new Uint16Array([0x0001, 0x3f80, 0xff80, 0x8000, 0x7fc0]));
    assert.equal(back[0], 2 ** -133);
    assert.equal(back[1], 1);
    assert.equal(back[2], -Infinity);
    assert.ok(Object.is(back[3], -0));
    assert.ok(Number.isNaN(back[4]));
  });
});

describe('safetensors file round trip', () => {
  it('writes and reads F32/F16/BF16/F64/I64/I32/U8 with metadata, aligned and little-endian', () => {
    const file = tmpPath('rt.safetensors');
    const edge = f32(0, -0, 1, -2, 65504, 2 ** -24, 2 ** -14, Infinity, -Infinity, NaN, 0.1, 3.14159);
    const tensors: TensorToWrite[] = [
      { name: 'w32', dtype: 'F32', shape: [3, 4], data: edge },
      { name: 'w16', dtype: 'F16', shape: [12], data: edge },
      { name: 'wbf', dtype: 'BF16', shape: [2, 6], data: edge },
      { name: 'w64', dtype: 'F64', shape: [2], data: new Float64Array([1 / 3, -1e300]) },
      { name: 'ids', dtype: 'I64', shape: [3], data: new BigInt64Array([0n, -1n, 2n ** 40n]) },
      { name: 'i32', dtype: 'I32', shape: [2], data: new Int32Array([7, -7]) },
      { name: 'mask', dtype: 'U8', shape: [3], data: new Uint8Array([1, 0, 255]) },
      { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
      { name: 'scalar', dtype: 'F32', shape: [], data: f32(42) },
    ];
    writeSafetensors(file, tensors, { format: 'pt', note: 'héllo' });

    const bytes = fs.readFileSync(file);
    const n = Number(bytes.readBigUInt64LE(0));
    assert.equal((8 + n) % 8, 0, 'header padded to 8 bytes');
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
    assert.deepEqual(header.__metadata__, { format: 'pt', note: 'héllo' });
    for (const [name, e] of Object.entries<any>(header)) {
      if (name === '__metadata__') continue;
      const size = { F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2, U8: 1 }[e.dtype as string]!;
      assert.equal(e.data_offsets[0] % size, 0, `${name} aligned to its element size`);
    }
    // F32 is stored little-endian: 1.0f = 00 00 80 3f.
    const w32 = header.w32.data_offsets[0] + 8 + n;
    assert.deepEqual([...bytes.subarray(w32 + 8, w32 + 12)], [0x00, 0x00, 0x80, 0x3f]);

    const st = openSafetensors(file);
    try {
      assert.deepEqual(st.metadata, { format: 'pt', note: 'héllo' });
      assert.deepEqual(new Set(st.names()), new Set(tensors.map((t) => t.name)));
      assert.deepEqual(st.shape('w32'), [3, 4]);
      assert.equal(st.dtype('wbf'), 'BF16');
      assert.deepEqual(st.readF32('w32'), edge);
      const h = st.readF32('w16');
      assert.deepEqual([...h].slice(0, 9), [0, -0, 1, -2, 65504, 2 ** -24, 2 ** -14, Infinity, -Infinity]);
      assert.ok(Object.is(h[1], -0));
      assert.ok(Number.isNaN(h[9]));
      assert.equal(h[10], f16ToF32(f32ToF16(f32(0.1)))[0]);
      assert.ok(Math.abs(h[11] - 3.14159) < 2e-3);
      const b = st.readF32('wbf');
      assert.deepEqual([...b].slice(0, 4), [0, -0, 1, -2]);
      assert.equal(b[4], 65536); // 65504 rounds to 2^16 in bfloat16
      assert.ok(Number.isNaN(b[9]));
      assert.deepEqual(st.readF32('w64'), f32(1 / 3, -Infinity)); // -1e300 overflows float32
      assert.deepEqual(st.readI64('ids'), new BigInt64Array([0n, -1n, 2n ** 40n]));
      assert.deepEqual(st.readI32('i32'), new Int32Array([7, -7]));
      assert.deepEqual(st.readRaw('mask').bytes, new Uint8Array([1, 0, 255]));
      assert.deepEqual(st.readF32('empty'), new Float32Array(0));
      assert.deepEqual(st.shape('scalar'), []);
      assert.deepEqual(st.readF32('scalar'), f32(42));
      assert.throws(() => st.readF32('ids'), /tensor "ids": is I64; readF32 converts only/);
      assert.throws(() => st.readF32('nope'), new RegExp(`^SafetensorsError: ${escape(file)}: tensor "nope": no such tensor`));
    } finally {
      st.close();
    }
  });

  it('treats a tensor named __proto__ as an ordinary name', () => {
    const file = tmpPath('proto.safetensors');
    writeSafetensors(file, [{ name: '__proto__', dtype: 'F32', shape: [1], data: f32(5) }]);
    const st = openSafetensors(file);
    assert.deepEqual(st.names(), ['__proto__']);
    assert.deepEqual(st.readF32('__proto__'), f32(5));
    st.close();
  });

  it('writes the same bytes regardless of input order', () => {
    const a = tmpPath('a.safetensors');
    const b = tmpPath('b.safetensors');
    const t1: TensorToWrite = { name: 'x', dtype: 'F16', shape: [2], data: f32(1, 2) };
    const t2: TensorToWrite = { name: 'y', dtype: 'F32', shape: [1], data: f32(3) };
    const t3: TensorToWrite = { name: 'a', dtype: 'F32', shape: [1], data: f32(4) };
    writeSafetensors(a, [t1, t2, t3]);
    writeSafetensors(b, [t3, t2, t1]);
    assert.deepEqual(fs.readFileSync(a), fs.readFileSync(b));
  });

  it('reads the Python-written golden fixture', () => {
    const st = openSafetensors(path.join(import.meta.dirname, 'fixtures/golden/llama-gqa/model.safetensors'));
    try {
      assert.equal(st.metadata.format, 'pt');
      assert.deepEqual(st.shape('model.layers.0.self_attn.k_proj.weight'), [16, 32]);
      const norm = st.readF32('model.norm.weight');
      assert.equal(norm.length, 32);
      assert.ok(norm.every((v) => Number.isFinite(v) && Math.abs(v - 1) < 1), 'RMSNorm weights are 1 + 0.1·N(0,1)');
    } finally {
      st.close();
    }
  });

  it('reads only the requested tensor range, not the whole file', () => {
    const file = tmpPath('big.safetensors');
    const big = new Float32Array(1 << 20); // 4 MiB
    big.fill(0.5);
    writeSafetensors(file, [
      { name: 'big', dtype: 'F32', shape: [1024, 1024], data: big },
      { name: 'small', dtype: 'F32', shape: [4], data: f32(1, 2, 3, 4) },
    ]);
    const spy = mock.method(fs, 'readSync');
    try {
      const st = openSafetensors(file);
      const headerBytes = spy.mock.calls.reduce((s, c) => s + ((c.arguments as unknown[])[3] as number), 0);
      assert.deepEqual(st.readF32('small'), f32(1, 2, 3, 4));
      st.close();
      const total = spy.mock.calls.reduce((s, c) => s + ((c.arguments as unknown[])[3] as number), 0);
      assert.equal(total - headerBytes, 16, 'the tensor read moves exactly its 16 bytes');
      assert.ok(total < 1024, `read ${total} bytes of a ${fs.statSync(file).size}-byte file`);
    } finally {
      spy.mock.restore();
    }
  });
});

describe('malformed safetensors files name the file and the problem', () => {
  const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
  const cases: Array<[string, () => string, RegExp]> = [
    ['shorter than 8 bytes', () => { const f = tmpPath('short.safetensors'); fs.writeFileSync(f, Buffer.from([1, 2, 3])); return f; }, /3 bytes, shorter than the 8-byte header length/],
    ['absurd header length', () => rawFile({ t: ok }, 8, { lengthOverride: 1n << 40n }), /header length 1099511627776 is absurd/],
    ['header length beyond the file', () => rawFile({ t: ok }, 8, { lengthOverride: 5000n }), /header length 5000 is larger than the file/],
    ['invalid JSON', () => rawFile('{"t": {"dtype": ', 8), /header is not valid UTF-8 JSON/],
    ['header not an object', () => rawFile('[1, 2]', 0), /header is not a JSON object/],
    ['unknown dtype', () => rawFile({ t: { ...ok, dtype: 'Q4_K' } }, 8), /tensor "t": unknown dtype "Q4_K"/],
    ['shape does not match the byte span', () => rawFile({ t: { ...ok, shape: [3] } }, 12), /tensor "t": shape \[3\] of F32 needs 12 bytes but data_offsets \[0, 8\] span 8/],
    ['bad shape', () => rawFile({ t: { ...ok, shape: [-2] } }, 8), /tensor "t": shape \[-2\] is not a list of non-negative integers/],
    ['offsets beyond the data', () => rawFile({ t: { ...ok, data_offsets: [8, 16] } }, 12), /tensor "t": data_offsets \[8, 16\] run past the data section \(12 bytes\); the file is truncated/],
    ['reversed offsets', () => rawFile({ t: { ...ok, shape: [0], data_offsets: [8, 0] } }, 8), /tensor "t": data_offsets \[8,0\] must be \[begin, end\]/],
    ['overlapping tensors', () => rawFile({ a: ok, b: { ...ok, data_offsets: [4, 12] } }, 16), /tensor "b": data_offsets \[4, 12\] overlap tensor "a" \[0, 8\]/],
    ['bad __metadata__', () => rawFile({ __metadata__: { n: 1 }, t: ok }, 8), /__metadata__ must map strings to strings/],
    ['Git LFS pointer', () => { const f = tmpPath('lfs.safetensors'); fs.writeFileSync(f, 'version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n'); return f; }, /Git LFS pointer/],
  ];
  for (const [what, make, pattern] of cases) {
    it(what, () => {
      const file = make();
      assert.throws(
        () => openSafetensors(file),
        (err: Error) => {
          assert.equal(err.name, 'SafetensorsError');
          assert.ok(err.message.startsWith(`${file}: `), `names the file: ${err.message}`);
          assert.match(err.message, pattern);
          return true;
        },
      );
    });
  }

  it('a valid hand-built file opens (so the cases above fail for their stated reason)', () => {
    const file = rawFile({ __metadata__: { format: 'pt' }, a: ok, b: { ...ok, data_offsets: [8, 16] } }, 16);
    const st = openSafetensors(file);
    assert.deepEqual(st.names(), ['a', 'b']);
    st.close();
  });

  it('a missing file', () => {
    const file = path.join(root, 'does-not-exist.safetensors');
    assert.throws(() => openSafetensors(file), new RegExp(`^SafetensorsError: ${escape(file)}: cannot open \\(ENOENT\\)`));
  });
});

describe('writing safetensors', () => {
  it('rejects data that does not match the shape or dtype, naming file and tensor', () => {
    const file = tmpPath('bad.safetensors');
    assert.throws(() => writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [3], data: f32(1, 2) }]), /tensor "w": shape \[3\] needs 3 elements but data has 2/);
    assert.throws(() => writeSafetensors(file, [{ name: 'w', dtype: 'I32', shape: [2], data: f32(1, 2) }]), /tensor "w": cannot write Float32Array as I32/);
    assert.throws(() => writeSafetensors(file, [{ name: 'w', dtype: 'F16', shape: [2], data: new Uint8Array(3) }]), /raw bytes are 3 long but \[2\] F16 needs 4/);
    const dup: TensorToWrite = { name: 'w', dtype: 'F32', shape: [1], data: f32(1) };
    assert.throws(() => writeSafetensors(file, [dup, dup]), /tensor "w": duplicate tensor name/);
    assert.equal(fs.existsSync(file), false, 'nothing written on error');
    assert.deepEqual(fs.readdirSync(root).filter((f) => f.includes('.tmp-')), []);
  });

  it('a write that fails midway leaves the previous file intact and no temp file', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'model.safetensors');
    writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [2], data: f32(1, 2) }]);
    const before = fs.readFileSync(file);
    let calls = 0;
    const realWrite = fs.writeSync;
    // Simulates the disk filling up after the header has gone out.
    const spy = mock.method(fs, 'writeSync', function (this: unknown, ...args: unknown[]) {
      if (++calls > 2) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      return (realWrite as (...a: unknown[]) => number).apply(this, args);
    });
    try {
      assert.throws(
        () => writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [1000], data: new Float32Array(1000) }]),
        (err: Error) => err.message.startsWith(`${file}: write failed, previous file left unchanged`) && /ENOSPC/.test(err.message),
      );
    } finally {
      spy.mock.restore();
    }
    assert.ok(calls > 2, 'the failure happened after some bytes were written');
    assert.deepEqual(fs.readFileSync(file), before);
    assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
    const st = openSafetensors(file);
    assert.deepEqual(st.readF32('w'), f32(1, 2));
    st.close();
  });
});

describe('checkpoint directories', () => {
  const layerTensors = (layers: number, width: number): TensorToWrite[] => {
    const out: TensorToWrite[] = [{ name: 'model.embed_tokens.weight', dtype: 'F32', shape: [8, width], data: ramp(8 * width) }];
    for (let l = 0; l < layers; l++) {
      out.push({ name: `model.layers.${l}.mlp.up_proj.weight`, dtype: 'BF16', shape: [width, width], data: ramp(width * width, 0.25) });
      out.push({ name: `model.layers.${l}.input_layernorm.weight`, dtype: 'F16', shape: [width], data: ramp(width, 0.5) });
    }
    return out;
  };

  it('writes a single model.safetensors with format=pt when everything fits', () => {
    const dir = tmpDir();
    const tensors = layerTensors(2, 4);
    assert.deepEqual(writeCheckpoint(dir, tensors), [SINGLE_FILE]);
    assert.deepEqual(fs.readdirSync(dir), [SINGLE_FILE]);
    const ck = openCheckpoint(dir);
    try {
      assert.deepEqual(new Set(ck.names()), new Set(tensors.map((t) => t.name)));
      for (const t of tensors) {
        assert.equal(ck.dtype(t.name), t.dtype);
        assert.deepEqual(ck.shape(t.name), t.shape);
        assert.deepEqual(ck.readF32(t.name), t.data, t.name); // ramp values are exact in F16/BF16
      }
    } finally {
      ck.close();
    }
    assert.equal(openSafetensors(path.join(dir, SINGLE_FILE)).metadata.format, 'pt');
  });

  it('shards in HF layout, reads back, and opens only the shards it reads', () => {
    const dir = tmpDir();
    const tensors = layerTensors(3, 16); // embed 512 B; each layer 512 + 32 B
    const files = writeCheckpoint(dir, tensors, { maxShardBytes: 600 });
    assert.deepEqual(files, [1, 2, 3, 4].map((k) => `model-0000${k}-of-00004.safetensors`).concat(INDEX_FILE));
    assert.deepEqual(fs.readdirSync(dir).sort(), [...files].sort());
    const index = JSON.parse(fs.readFileSync(path.join(dir, INDEX_FILE), 'utf8'));
    assert.equal(index.metadata.total_size, 512 + 3 * 544);
    assert.deepEqual(Object.keys(index.weight_map), Object.keys(index.weight_map).sort());
    assert.equal(index.weight_map['model.embed_tokens.weight'], 'model-00001-of-00004.safetensors');
    assert.equal(index.weight_map['model.layers.0.mlp.up_proj.weight'], 'model-00002-of-00004.safetensors');
    assert.equal(index.weight_map['model.layers.0.input_layernorm.weight'], 'model-00002-of-00004.safetensors');
    assert.equal(index.weight_map['model.layers.2.input_layernorm.weight'], 'model-00004-of-00004.safetensors');

    const opened: string[] = [];
    const realOpen = fs.openSync;
    const spy = mock.method(fs, 'openSync', function (this: unknown, ...args: unknown[]) {
      opened.push(path.basename(String(args[0])));
      return (realOpen as (...a: unknown[]) => number).apply(this, args);
    });
    try {
      const ck = openCheckpoint(dir);
      assert.equal(ck.names().length, tensors.length);
      assert.ok(ck.has('model.layers.1.mlp.up_proj.weight'));
      assert.equal(ck.has('lm_head.weight'), false);
      assert.deepEqual(opened, [], 'no shard opened before a read');
      assert.deepEqual(ck.readF32('model.layers.2.mlp.up_proj.weight'), tensors.find((t) => t.name === 'model.layers.2.mlp.up_proj.weight')!.data);
      assert.deepEqual(opened, ['model-00004-of-00004.safetensors']);
      for (const t of tensors) assert.deepEqual(ck.readF32(t.name), t.data, t.name);
      ck.close();
    } finally {
      spy.mock.restore();
    }
  });

  it('gives a tensor larger than maxShardBytes a shard of its own', () => {
    const dir = tmpDir();
    const files = writeCheckpoint(dir, [
      { name: 'a', dtype: 'F32', shape: [2], data: f32(1, 2) },
      { name: 'huge', dtype: 'F32', shape: [64], data: ramp(64) },
      { name: 'b', dtype: 'F32', shape: [2], data: f32(3, 4) },
    ], { maxShardBytes: 100 });
    assert.equal(files.length, 4);
    const index = JSON.parse(fs.readFileSync(path.join(dir, INDEX_FILE), 'utf8'));
    assert.deepEqual(index.weight_map, { a: 'model-00001-of-00003.safetensors', b: 'model-00003-of-00003.safetensors', huge: 'model-00002-of-00003.safetensors' });
  });

  it('re-saving with a different layout removes the old layout files', () => {
    const dir = tmpDir();
    writeCheckpoint(dir, layerTensors(3, 16), { maxShardBytes: 600 });
    writeCheckpoint(dir, layerTensors(1, 4));
    assert.deepEqual(fs.readdirSync(dir), [SINGLE_FILE]);
    writeCheckpoint(dir, layerTensors(3, 16), { maxShardBytes: 600 });
    assert.equal(fs.existsSync(path.join(dir, SINGLE_FILE)), false);
    const ck = openCheckpoint(dir);
    assert.equal(ck.names().length, 7);
    ck.close();
  });

  it('a missing shard is a clear error naming the index and the shard', () => {
    const dir = tmpDir();
    writeCheckpoint(dir, layerTensors(3, 16), { maxShardBytes: 600 });
    fs.rmSync(path.join(dir, 'model-00002-of-00004.safetensors'));
    const ck = openCheckpoint(dir);
    assert.deepEqual(ck.readF32('model.layers.2.input_layernorm.weight').length, 16, 'other shards still load');
    assert.throws(
      () => ck.readF32('model.layers.0.mlp.up_proj.weight'),
      new RegExp(`^SafetensorsError: ${escape(path.join(dir, INDEX_FILE))}: shard "model-00002-of-00004.safetensors" .* is missing .* re-download`),
    );
    ck.close();
  });

  it('an index entry absent from its shard is a clear error naming the shard', () => {
    const dir = tmpDir();
    writeCheckpoint(dir, layerTensors(3, 16), { maxShardBytes: 600 });
    const indexPath = path.join(dir, INDEX_FILE);
    const index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
    index.weight_map['model.layers.9.ghost.weight'] = 'model-00001-of-00004.safetensors';
    fs.writeFileSync(indexPath, JSON.stringify(index));
    const ck = openCheckpoint(dir);
    assert.throws(
      () => ck.shape('model.embed_tokens.weight'),
      new RegExp(`^SafetensorsError: ${escape(path.join(dir, 'model-00001-of-00004.safetensors'))}: .*does not contain \\(e.g. "model.layers.9.ghost.weight"\\)`),
    );
    ck.close();
  });

  it('rejects shard names that escape the directory, and empty directories', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, INDEX_FILE), JSON.stringify({ metadata: {}, weight_map: { w: '../elsewhere.safetensors' } }));
    assert.throws(() => openCheckpoint(dir), /weight_map maps "w" to "..\/elsewhere.safetensors", which is not a file name/);
    const empty = tmpDir();
    fs.writeFileSync(path.join(empty, 'pytorch_model.bin'), '');
    assert.throws(() => openCheckpoint(empty), new RegExp(`^SafetensorsError: ${escape(empty)}: no model.safetensors or model.safetensors.index.json. It has PyTorch pickle weights`));
  });
});
