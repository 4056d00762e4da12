// AdamW's element loop and the gradient sum of squares as WebAssembly SIMD kernels, assembled by
// wasm-asm.ts. Both compute in float64 (two lanes at a time) with the same operations in the same
// order as the JS loops of adamw.ts, so their results are bitwise equal to the JS path: float32
// inputs are promoted exactly, every intermediate is a double, and the stores round to float32 as a
// Float32Array assignment does (IEEE round-to-nearest-even; WebAssembly neither fuses multiply-adds
// nor flushes subnormals). What SIMD buys is two square roots and two divisions per instruction.
import { assemble, I, T, type FuncDef } from './wasm-asm.ts';

// adamw(p, g, m, v, bytes, scale, beta1, g1, beta2, g2, keep, stepSize, invRootC2, eps): the update
// of adamw.ts on `bytes` / 4 floats (a multiple of 4) at byte offsets p, g, m, v (16-byte aligned).
const P = { p: 0, g: 1, m: 2, v: 3, bytes: 4, scale: 5, beta1: 6, g1: 7, beta2: 8, g2: 9, keep: 10, step: 11, inv: 12, eps: 13 };
const F64_PARAMS = ['scale', 'beta1', 'g1', 'beta2', 'g2', 'keep', 'step', 'inv', 'eps'] as const;
// Locals after the 14 parameters: the byte offset, the nine constants splatted, the loaded vectors,
// and the low half's float64 results kept until the high half is done.
const L = { off: 14, splat: 15, G: 24, M: 25, V: 26, Pw: 27, gd: 28, md: 29, vd: 30, mLo: 31, vLo: 32, pLo: 33 };
const splat = (k: (typeof F64_PARAMS)[number]) => L.splat + F64_PARAMS.indexOf(k);
const HIGH_TO_LOW = [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7];
const JOIN_LOWS = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];

/** Lanes `half` of a float32x4 local as float64x2. */
const promote = (local: number, half: 0 | 1) => [...I.localGet(local), ...(half ? [...I.localGet(local), ...I.shuffle(HIGH_TO_LOW)] : []), ...I.f64x2PromoteLowF32x4()];

/** One half of the update: sets L.md, L.vd and leaves p's new value (float64x2) on the stack. */
function halfUpdate(half: 0 | 1): number[] {
  return [
    // g = grad · scale
    ...promote(L.G, half), ...I.localGet(splat('scale')), ...I.f64x2Mul(), ...I.localSet(L.gd),
    // m = beta1 · m + g1 · g
    ...I.localGet(splat('beta1')), ...promote(L.M, half), ...I.f64x2Mul(),
    ...I.localGet(splat('g1')), ...I.localGet(L.gd), ...I.f64x2Mul(), ...I.f64x2Add(), ...I.localSet(L.md),
    // v = beta2 · v + (g2 · g) · g
    ...I.localGet(splat('beta2')), ...promote(L.V, half), ...I.f64x2Mul(),
    ...I.localGet(splat('g2')), ...I.localGet(L.gd), ...I.f64x2Mul(), ...I.localGet(L.gd), ...I.f64x2Mul(), ...I.f64x2Add(), ...I.localSet(L.vd),
    // p = keep · p − (stepSize · m) / (√v · invRootC2 + eps)
    ...I.localGet(splat('keep')), ...promote(L.Pw, half), ...I.f64x2Mul(),
    ...I.localGet(splat('step')), ...I.localGet(L.md), ...I.f64x2Mul(),
    ...I.localGet(L.vd), ...I.f64x2Sqrt(), ...I.localGet(splat('inv')), ...I.f64x2Mul(), ...I.localGet(splat('eps')), ...I.f64x2Add(),
    ...I.f64x2Div(), ...I.f64x2Sub(),
  ];
}

/** Stores float32x4(lo, hi) at base + off, lo being a local already demoted. */
const storeJoined = (base: number, lo: number, hiOnStack: number[]) => [
  ...I.localGet(base), ...I.localGet(L.off), ...I.i32Add(),
  ...I.localGet(lo), ...hiOnStack, ...I.f32x4DemoteF64x2Zero(), ...I.shuffle(JOIN_LOWS), ...I.v128Store(),
];

const load = (base: number, into: number) => [...I.localGet(base), ...I.localGet(L.off), ...I.i32Add(), ...I.v128Load(), ...I.localSet(into)];

const adamw: FuncDef = {
  name: 'adamw',
  params: [T.i32, T.i32, T.i32, T.i32, T.i32, ...F64_PARAMS.map(() => T.f64)],
  results: [],
  locals: [T.i32, ...Array.from({ length: 19 }, () => T.v128)],
  body: [
    ...F64_PARAMS.flatMap((k) => [...I.localGet(P[k]), ...I.f64x2Splat(), ...I.localSet(splat(k))]),
    ...I.i32Const(0), ...I.localSet(L.off),
    ...I.block(), ...I.loop(),
    ...I.localGet(L.off), ...I.localGet(P.bytes), ...I.i32LtU(), ...I.i32Eqz(), ...I.brIf(1),
    ...load(P.g, L.G), ...load(P.m, L.M), ...load(P.v, L.V), ...load(P.p, L.Pw),
    ...halfUpdate(0), ...I.f32x4DemoteF64x2Zero(), ...I.localSet(L.pLo),
    ...I.localGet(L.md), ...I.f32x4DemoteF64x2Zero(), ...I.localSet(L.mLo),
    ...I.localGet(L.vd), ...I.f32x4DemoteF64x2Zero(), ...I.localSet(L.vLo),
    // The high half's p stays on the stack for its store; m and v come from their locals after.
    ...storeJoined(P.p, L.pLo, halfUpdate(1)),
    ...storeJoined(P.m, L.mLo, I.localGet(L.md)),
    ...storeJoined(P.v, L.vLo, I.localGet(L.vd)),
    ...I.localGet(L.off), ...I.i32Const(16), ...I.i32Add(), ...I.localSet(L.off),
    ...I.br(0), ...I.end(), ...I.end(),
  ],
};

// sumsq(g, bytes, acc): adds g[i]² into four float64 running sums at acc (a, b, c, d: lanes i mod 4),
// as sumOfSquares in adamw.ts does, over `bytes` / 4 floats (a multiple of 4).
const S = { g: 0, bytes: 1, acc: 2, off: 3, ab: 4, cd: 5, X: 6, h: 7 };
/** sum += half² (sum a float64x2 local). */
const addSquares = (sum: number, half: 0 | 1) => [...I.localGet(sum), ...promote(S.X, half), ...I.localTee(S.h), ...I.localGet(S.h), ...I.f64x2Mul(), ...I.f64x2Add(), ...I.localSet(sum)];
const sumsq: FuncDef = {
  name: 'sumsq',
  params: [T.i32, T.i32, T.i32],
  results: [],
  locals: [T.i32, T.v128, T.v128, T.v128, T.v128],
  body: [
    ...I.localGet(S.acc), ...I.v128Load(0), ...I.localSet(S.ab),
    ...I.localGet(S.acc), ...I.v128Load(16), ...I.localSet(S.cd),
    ...I.i32Const(0), ...I.localSet(S.off),
    ...I.block(), ...I.loop(),
    ...I.localGet(S.off), ...I.localGet(S.bytes), ...I.i32LtU(), ...I.i32Eqz(), ...I.brIf(1),
    ...I.localGet(S.g), ...I.localGet(S.off), ...I.i32Add(), ...I.v128Load(), ...I.localSet(S.X),
    ...addSquares(S.ab, 0), ...addSquares(S.cd, 1),
    ...I.localGet(S.off), ...I.i32Const(16), ...I.i32Add(), ...I.localSet(S.off),
    ...I.br(0), ...I.end(), ...I.end(),
    ...I.localGet(S.acc), ...I.localGet(S.ab), ...I.v128Store(0),
    ...I.localGet(S.acc), ...I.localGet(S.cd), ...I.v128Store(16),
  ],
};

export const ADAMW_WASM: Uint8Array = assemble([adamw, sumsq]);
