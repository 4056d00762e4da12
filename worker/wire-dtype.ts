// Activations and gradients on the wire as float32 or, with `wire_dtype: bf16`, as their bfloat16
// bits (round to nearest even): half the bytes per frame, ~3 significant digits per element.
import { bf16ToF32, f32ToBf16 } from '../model/hf/half.ts';
import type { WireTensor } from '../proto/frames.ts';

export type WireDtype = 'float32' | 'bf16';

export function toWire(data: Float32Array, shape: number[], dtype: WireDtype): WireTensor {
  return dtype === 'bf16' ? { dtype: 'bfloat16', shape, data: f32ToBf16(data) } : { dtype: 'float32', shape, data };
}

/** The float32 values of a received activation or gradient, whichever of the two it travelled as. */
export function fromWire(t: WireTensor, what: string): Float32Array {
  if (t.dtype === 'float32') return t.data;
  if (t.dtype === 'bfloat16') return bf16ToF32(t.data);
  throw new Error(`${what} arrived as ${t.dtype}; expected float32 or bfloat16`);
}
