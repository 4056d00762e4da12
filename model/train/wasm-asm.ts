// A minimal WebAssembly binary writer: just the sections and instructions the host-side optimizer
// kernels (adamw-wasm.ts) use, so that the kernels are written here in TypeScript and need no
// toolchain. Encodings follow the WebAssembly core specification (binary format, SIMD proposal as
// merged into 2.0).

/** Unsigned LEB128. */
export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 (for i32.const). */
export function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

export const T = { i32: 0x7f, f64: 0x7c, v128: 0x7b } as const;
export type ValType = (typeof T)[keyof typeof T];

/** Instructions: each returns its bytes; a function body is their concatenation. */
export const I = {
  localGet: (i: number) => [0x20, ...uleb(i)],
  localSet: (i: number) => [0x21, ...uleb(i)],
  localTee: (i: number) => [0x22, ...uleb(i)],
  i32Const: (n: number) => [0x41, ...sleb(n)],
  i32Add: () => [0x6a],
  i32LtU: () => [0x49],
  f64Add: () => [0xa0],
  f64Mul: () => [0xa2],
  /** block/loop with no result; `br_if 1` leaves the block, `br 0` repeats the loop. */
  block: () => [0x02, 0x40],
  loop: () => [0x03, 0x40],
  end: () => [0x0b],
  br: (depth: number) => [0x0c, ...uleb(depth)],
  brIf: (depth: number) => [0x0d, ...uleb(depth)],
  i32Eqz: () => [0x45],
  // SIMD (0xfd prefix); memory operands are 16-byte aligned by the caller (align hint 2^4).
  v128Load: (offset = 0) => [0xfd, ...uleb(0x00), 4, ...uleb(offset)],
  v128Store: (offset = 0) => [0xfd, ...uleb(0x0b), 4, ...uleb(offset)],
  shuffle: (lanes: readonly number[]) => [0xfd, ...uleb(0x0d), ...lanes],
  f64x2Splat: () => [0xfd, ...uleb(0x14)],
  f64x2ExtractLane: (lane: number) => [0xfd, ...uleb(0x21), lane],
  f64x2ReplaceLane: (lane: number) => [0xfd, ...uleb(0x22), lane],
  f64x2Sqrt: () => [0xfd, ...uleb(0xef)],
  f64x2Add: () => [0xfd, ...uleb(0xf0)],
  f64x2Sub: () => [0xfd, ...uleb(0xf1)],
  f64x2Mul: () => [0xfd, ...uleb(0xf2)],
  f64x2Div: () => [0xfd, ...uleb(0xf3)],
  f32x4DemoteF64x2Zero: () => [0xfd, ...uleb(0x5e)],
  f64x2PromoteLowF32x4: () => [0xfd, ...uleb(0x5f)],
};

export interface FuncDef {
  name: string;
  params: ValType[];
  results: ValType[];
  /** Extra locals after the parameters, in order. */
  locals: ValType[];
  body: number[];
}

const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
const section = (id: number, payload: number[]) => [id, ...uleb(payload.length), ...payload];
const name = (s: string) => {
  const b = [...Buffer.from(s, 'utf8')];
  return [...uleb(b.length), ...b];
};

/** A module importing one memory as env.memory and exporting every function by its name. */
export function assemble(funcs: readonly FuncDef[]): Uint8Array {
  const types = funcs.map((f) => [0x60, ...uleb(f.params.length), ...f.params, ...uleb(f.results.length), ...f.results]);
  const imports = [[...name('env'), ...name('memory'), 0x02, 0x00, ...uleb(1)]];
  const funcIdx = funcs.map((_, i) => uleb(i));
  const exports = funcs.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]);
  const bodies = funcs.map((f) => {
    // Locals run-length encoded by type.
    const groups: number[][] = [];
    for (const t of f.locals) {
      const last = groups[groups.length - 1];
      if (last && last[1] === t) last[0]++;
      else groups.push([1, t]);
    }
    const code = [...vec(groups.map(([n, t]) => [...uleb(n), t])), ...f.body, 0x0b];
    return [...uleb(code.length), ...code];
  });
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(types)),
    ...section(2, vec(imports)),
    ...section(3, vec(funcIdx)),
    ...section(7, vec(exports)),
    ...section(10, vec(bodies)),
  ]);
}
