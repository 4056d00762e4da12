// half / bfloat16 <-> float32 conversion, round to nearest even.

let f16Table: Uint32Array | undefined;

// All 65536 halves decoded once (256 KB) so that converting a large tensor is one lookup per element.
function halfTable(): Uint32Array {
  if (f16Table) return f16Table;
  const bits = new Uint32Array(65536);
  const vals = new Float32Array(bits.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) {
      // Zero and subnormals: mant * 2^-24 is exact in float32; the sign is OR-ed in so -0 survives.
      vals[h] = mant * 2 ** -24;
      bits[h] |= sign;
    } else if (exp === 31) {
      bits[h] = sign | 0x7f800000 | (mant << 13); // inf, or NaN keeping its payload
    } else {
      bits[h] = sign | ((exp + 112) << 23) | (mant << 13); // rebias 15 -> 127
    }
  }
  f16Table = bits;
  return bits;
}

export function f16ToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const table = halfTable();
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) o[i] = table[src[i]];
  return out;
}

export function bf16ToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) o[i] = src[i] << 16;
  return out;
}

/** float32 -> IEEE half, round to nearest even; overflow gives inf, NaN stays NaN (quiet). */
export function f32ToF16(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = u[i];
    const sign = (x >>> 16) & 0x8000;
    const abs = x & 0x7fffffff;
    let h: number;
    if (abs > 0x7f800000) {
      h = 0x7e00 | ((abs >>> 13) & 0x3ff);
    } else if (abs >= 0x477ff000) {
      // 65520 is halfway between 65504 (largest half, odd mantissa) and 2^16: ties go to inf.
      h = 0x7c00;
    } else if (abs >= 0x38800000) {
      // Normal half. Rebias 127 -> 15 and drop 13 mantissa bits; a carry out of the mantissa
      // correctly bumps the exponent.
      h = (abs - 0x38000000) >>> 13;
      const rest = abs & 0x1fff;
      if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
    } else {
      // Subnormal half (or zero): the value in units of 2^-24, rounded to nearest even. A result of
      // 0x400 is the smallest normal, which is also the right bit pattern.
      const scaled = Math.abs(src[i]) * 16777216;
      h = Math.floor(scaled);
      const frac = scaled - h;
      if (frac > 0.5 || (frac === 0.5 && (h & 1) === 1)) h++;
    }
    out[i] = sign | h;
  }
  return out;
}

/** float32 -> bfloat16, round to nearest even; NaN stays NaN (quiet). */
export function f32ToBf16(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = u[i];
    if ((x & 0x7fffffff) > 0x7f800000) out[i] = (x >>> 16) | 0x40;
    // Non-NaN bit patterns are <= 0xff800000, so the sum stays below 2^32 before the shift.
    else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}
