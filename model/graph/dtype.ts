// Element types the builder emits, with their ONNX enum value and ONNX Runtime tensor type name.
// uint4/int4 hold two elements per byte, low nibble first (ONNX's packing); they only appear as
// initializers of quantized weights.
export type DType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'bool' | 'uint8' | 'int8' | 'uint4' | 'int4';

export const ONNX_DTYPE: Record<DType, number> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  bfloat16: 16,
  float64: 11,
  uint4: 21,
  int4: 22,
};

export const BYTES_PER_ELEMENT: Record<DType, number> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  bool: 1,
  uint8: 1,
  int8: 1,
  uint4: 0.5,
  int4: 0.5,
};

/** 4-bit types: an n-element tensor occupies ceil(n / 2) bytes. */
export function isPacked4(dtype: DType): boolean {
  return dtype === 'uint4' || dtype === 'int4';
}

export function isFloat(dtype: DType): boolean {
  return dtype === 'float32' || dtype === 'float64' || dtype === 'float16';
}

export type TypedData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Int8Array | Uint16Array;

/** Builds a typed array of `dtype` from plain numbers (used for small constants). */
export function typedFrom(dtype: DType, values: readonly number[]): TypedData {
  switch (dtype) {
    case 'float32':
      return Float32Array.from(values);
    case 'float64':
      return Float64Array.from(values);
    case 'int64':
      return BigInt64Array.from(values, (v) => BigInt(v));
    case 'int32':
      return Int32Array.from(values);
    case 'bool':
    case 'uint8':
      return Uint8Array.from(values);
    case 'int8':
      return Int8Array.from(values);
    case 'float16':
    case 'bfloat16':
      throw new Error('half-precision constants are not built from numbers; convert explicitly');
    case 'uint4':
    case 'int4':
      throw new Error(`${dtype} constants are packed two per byte; build the bytes explicitly`);
  }
}

export function toNumbers(data: TypedData): number[] {
  return Array.from(data as ArrayLike<number | bigint>, (v) => Number(v));
}

/**
 * A tensor in host memory: what a session is fed and returns, and (narrowed to float32/int64) what
 * travels between ranks (proto/frames.ts WireTensor). `shape` as in safetensors and the wire; ONNX
 * Runtime's `dims` stays inside model/graph/session.ts.
 */
export interface HostTensor {
  dtype: DType;
  shape: number[];
  data: TypedData;
}
