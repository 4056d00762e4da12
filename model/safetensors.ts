// Safetensors files and Hugging Face checkpoint directories (one `model.safetensors`, or shards plus
// `model.safetensors.index.json`). Reads go through an fd and positioned reads so that a pipeline
// worker pulls only its own blocks' tensors out of a multi-GB checkpoint.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { log } from './log.ts';

export type Dtype =
  | 'F64' | 'F32' | 'F16' | 'BF16'
  | 'I64' | 'I32' | 'I16' | 'I8'
  | 'U64' | 'U32' | 'U16' | 'U8'
  | 'BOOL' | 'F8_E4M3' | 'F8_E5M2';

const DTYPE_BYTES: Record<Dtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1,
  BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
};

export function isDtype(s: unknown): s is Dtype {
  return typeof s === 'string' && Object.hasOwn(DTYPE_BYTES, s);
}

export function dtypeBytes(dtype: Dtype): number {
  return DTYPE_BYTES[dtype];
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function tensorBytes(dtype: Dtype, shape: readonly number[]): number {
  return numel(shape) * DTYPE_BYTES[dtype];
}

// A header beyond this is not a real checkpoint; refusing it avoids allocating gigabytes for garbage.
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
// fs.readSync/writeSync move at most 2 GiB - 1 per call.
const IO_CHUNK = 1 << 30;
const REEXPORT = 're-download or re-export the checkpoint';

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';
// Hugging Face's `save_pretrained` default max_shard_size is "5GB", which it parses as 5 * 10^9.
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

export class SafetensorsError extends Error {
  readonly file: string;
  readonly tensor: string | undefined;
  constructor(file: string, message: string, tensor?: string, options?: ErrorOptions) {
    super(`${file}: ${tensor === undefined ? '' : `tensor "${tensor}": `}${message}`, options);
    this.name = 'SafetensorsError';
    this.file = file;
    this.tensor = tensor;
  }
}

// Typed-array views below reinterpret bytes in host order, and the format is little-endian.
function assertLittleEndian(): void {
  if (os.endianness() !== 'LE') throw new Error('safetensors I/O in propipe needs a little-endian host');
}

// ---------------------------------------------------------------------------------------------
// half / bfloat16 <-> float32

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

// ---------------------------------------------------------------------------------------------
// reading one file

export interface TensorEntry {
  dtype: Dtype;
  shape: number[];
  /** Offsets relative to the start of the data section. */
  begin: number;
  end: number;
}

export interface RawTensor {
  dtype: Dtype;
  shape: number[];
  bytes: Uint8Array;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function parseHeader(
  file: string,
  header: unknown,
  dataBytes: number,
): { entries: Map<string, TensorEntry>; metadata: Record<string, string> } {
  if (!isPlainObject(header)) throw new SafetensorsError(file, `header is not a JSON object; ${REEXPORT}`);
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (value === null) continue;
      if (!isPlainObject(value) || !Object.values(value).every((v) => typeof v === 'string')) {
        throw new SafetensorsError(file, `__metadata__ must map strings to strings; ${REEXPORT}`);
      }
      metadata = value as Record<string, string>;
      continue;
    }
    if (!isPlainObject(value)) throw new SafetensorsError(file, `header entry is not an object; ${REEXPORT}`, name);
    const { dtype, shape, data_offsets: offsets } = value;
    if (!isDtype(dtype)) {
      throw new SafetensorsError(
        file,
        `unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(', ')}); ` +
          're-export the checkpoint with a standard dtype',
        name,
      );
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw new SafetensorsError(file, `shape ${JSON.stringify(shape)} is not a list of non-negative integers; ${REEXPORT}`, name);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
      throw new SafetensorsError(file, `data_offsets ${JSON.stringify(offsets)} must be [begin, end] with 0 <= begin <= end; ${REEXPORT}`, name);
    }
    const [begin, end] = offsets as [number, number];
    const expected = tensorBytes(dtype, shape);
    if (!Number.isSafeInteger(expected) || expected !== end - begin) {
      throw new SafetensorsError(
        file,
        `shape [${shape.join(', ')}] of ${dtype} needs ${expected} bytes but data_offsets [${begin}, ${end}] ` +
          `span ${end - begin}; the header is corrupt — ${REEXPORT}`,
        name,
      );
    }
    if (end > dataBytes) {
      throw new SafetensorsError(
        file,
        `data_offsets [${begin}, ${end}] run past the data section (${dataBytes} bytes); ` +
          `the file is truncated — ${REEXPORT}`,
        name,
      );
    }
    entries.set(name, { dtype, shape: shape.slice(), begin, end });
  }
  // Empty tensors occupy no bytes, so they cannot overlap anything.
  const byOffset = [...entries].filter(([, e]) => e.end > e.begin).sort((a, b) => a[1].begin - b[1].begin);
  for (let i = 1; i < byOffset.length; i++) {
    const [prevName, prev] = byOffset[i - 1];
    const [name, cur] = byOffset[i];
    if (cur.begin < prev.end) {
      throw new SafetensorsError(
        file,
        `data_offsets [${cur.begin}, ${cur.end}] overlap tensor "${prevName}" [${prev.begin}, ${prev.end}]; ` +
          `the header is corrupt — ${REEXPORT}`,
        name,
      );
    }
  }
  return { entries, metadata };
}

function readFully(fd: number, file: string, buf: Uint8Array, position: number): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, Math.min(IO_CHUNK, buf.length - done), position + done);
    if (n === 0) throw new SafetensorsError(file, `unexpected end of file at byte ${position + done}; ${REEXPORT}`);
    done += n;
  }
}

/** One open safetensors file. Only the header is read on open; tensors are read on request. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Readonly<Record<string, string>>;
  private fd: number | undefined;
  private readonly entries: Map<string, TensorEntry>;
  private readonly dataStart: number;

  private constructor(file: string, fd: number, entries: Map<string, TensorEntry>, metadata: Record<string, string>, dataStart: number) {
    this.path = file;
    this.fd = fd;
    this.entries = entries;
    this.metadata = metadata;
    this.dataStart = dataStart;
  }

  static open(file: string): SafetensorsFile {
    assertLittleEndian();
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (err) {
      throw new SafetensorsError(file, `cannot open (${(err as NodeJS.ErrnoException).code ?? String(err)})`, undefined, { cause: err });
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < 8) throw new SafetensorsError(file, `file is ${size} bytes, shorter than the 8-byte header length; ${REEXPORT}`);
      const prefix = new Uint8Array(8);
      readFully(fd, file, prefix, 0);
      if (Buffer.from(prefix).toString('latin1') === 'version ') {
        throw new SafetensorsError(file, 'this is a Git LFS pointer, not the weights; run `git lfs pull` or re-download the checkpoint');
      }
      const headerLen = Buffer.from(prefix).readBigUInt64LE(0);
      if (headerLen > BigInt(MAX_HEADER_BYTES)) {
        throw new SafetensorsError(file, `header length ${headerLen} is absurd (> ${MAX_HEADER_BYTES} bytes); not a safetensors file or corrupt — ${REEXPORT}`);
      }
      const n = Number(headerLen);
      if (8 + n > size) {
        throw new SafetensorsError(file, `header length ${n} is larger than the file (${size} bytes); the file is truncated — ${REEXPORT}`);
      }
      const headerBytes = new Uint8Array(n);
      readFully(fd, file, headerBytes, 8);
      let header: unknown;
      try {
        header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
      } catch (err) {
        throw new SafetensorsError(file, `header is not valid UTF-8 JSON (${(err as Error).message}); ${REEXPORT}`, undefined, { cause: err });
      }
      const { entries, metadata } = parseHeader(file, header, size - 8 - n);
      return new SafetensorsFile(file, fd, entries, metadata, 8 + n);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** Tensor names in data order. */
  names(): string[] {
    return [...this.entries].sort((a, b) => a[1].begin - b[1].begin).map(([name]) => name);
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): TensorEntry {
    const e = this.entries.get(name);
    if (!e) {
      const some = [...this.entries.keys()].slice(0, 3).map((k) => `"${k}"`).join(', ');
      throw new SafetensorsError(this.path, `no such tensor (the file has ${this.entries.size}${some ? `, e.g. ${some}` : ''})`, name);
    }
    return e;
  }

  shape(name: string): number[] {
    return this.entry(name).shape.slice();
  }

  dtype(name: string): Dtype {
    return this.entry(name).dtype;
  }

  readRaw(name: string): RawTensor {
    const e = this.entry(name);
    if (this.fd === undefined) throw new SafetensorsError(this.path, 'read after close()', name);
    // A fresh ArrayBuffer starts aligned, so the caller may view it as any typed array.
    const bytes = new Uint8Array(new ArrayBuffer(e.end - e.begin));
    readFully(this.fd, this.path, bytes, this.dataStart + e.begin);
    return { dtype: e.dtype, shape: e.shape.slice(), bytes };
  }

  /** Reads a float tensor as float32, widening F16/BF16 exactly and rounding F64. */
  readF32(name: string): Float32Array {
    const { dtype, bytes } = this.readRaw(name);
    return toF32(bytes, dtype, this.path, name);
  }

  readI64(name: string): BigInt64Array {
    const { dtype, bytes } = this.readRaw(name);
    if (dtype !== 'I64') throw new SafetensorsError(this.path, `is ${dtype}, not I64`, name);
    return new BigInt64Array(bytes.buffer, 0, bytes.length / 8);
  }

  readI32(name: string): Int32Array {
    const { dtype, bytes } = this.readRaw(name);
    if (dtype === 'I32') return new Int32Array(bytes.buffer, 0, bytes.length / 4);
    if (dtype === 'I64') {
      const wide = new BigInt64Array(bytes.buffer, 0, bytes.length / 8);
      const out = new Int32Array(wide.length);
      for (let i = 0; i < wide.length; i++) {
        const v = wide[i];
        if (v > 2147483647n || v < -2147483648n) throw new SafetensorsError(this.path, `I64 value ${v} at index ${i} does not fit in int32`, name);
        out[i] = Number(v);
      }
      return out;
    }
    throw new SafetensorsError(this.path, `is ${dtype}, not I32 or I64`, name);
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

function toF32(bytes: Uint8Array, dtype: Dtype, file: string, name: string): Float32Array {
  switch (dtype) {
    case 'F32':
      return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
    case 'F16':
      return f16ToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2));
    case 'BF16':
      return bf16ToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2));
    case 'F64':
      return new Float32Array(new Float64Array(bytes.buffer, bytes.byteOffset, bytes.length / 8));
    default:
      throw new SafetensorsError(file, `is ${dtype}; readF32 converts only F32, F16, BF16 and F64 (use readRaw)`, name);
  }
}

export function openSafetensors(file: string): SafetensorsFile {
  return SafetensorsFile.open(file);
}

// ---------------------------------------------------------------------------------------------
// writing one file

export type TensorData =
  | Float32Array | Float64Array | Uint16Array | Int32Array | Int16Array | Int8Array
  | Uint32Array | Uint8Array | BigInt64Array | BigUint64Array;

export interface TensorToWrite {
  name: string;
  dtype: Dtype;
  shape: readonly number[];
  /**
   * Float32Array for F32 (or F16/BF16/F64, converted); Uint16Array holds raw F16/BF16 bits;
   * Uint8Array is taken as the raw little-endian bytes of any dtype; other typed arrays must match
   * the dtype (Int32Array for I32, BigInt64Array for I64, ...).
   */
  data: TensorData;
}

function bytesOf(a: TensorData): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

// Whether `data` is the typed array that holds `dtype`'s elements natively.
function isNative(dtype: Dtype, data: TensorData): boolean {
  switch (dtype) {
    case 'F64': return data instanceof Float64Array;
    case 'F32': return data instanceof Float32Array;
    case 'F16': case 'BF16': case 'U16': return data instanceof Uint16Array;
    case 'I64': return data instanceof BigInt64Array;
    case 'U64': return data instanceof BigUint64Array;
    case 'I32': return data instanceof Int32Array;
    case 'U32': return data instanceof Uint32Array;
    case 'I16': return data instanceof Int16Array;
    case 'I8': return data instanceof Int8Array;
    default: return false;
  }
}

/**
 * Checks that a tensor's data fits its dtype and shape and returns the conversion to run at write
 * time, so that bad input fails before the temp file exists and conversion happens one tensor at a time.
 */
function encoder(file: string, t: TensorToWrite): () => Uint8Array {
  const { name, dtype, shape, data } = t;
  const want = tensorBytes(dtype, shape);
  if (data instanceof Uint8Array) {
    if (data.length !== want) {
      throw new SafetensorsError(file, `raw bytes are ${data.length} long but [${shape.join(', ')}] ${dtype} needs ${want}`, name);
    }
    return () => data;
  }
  const count = numel(shape);
  if (data.length !== count) {
    throw new SafetensorsError(file, `shape [${shape.join(', ')}] needs ${count} elements but data has ${data.length}`, name);
  }
  if (data instanceof Float32Array) {
    if (dtype === 'F32') return () => bytesOf(data);
    if (dtype === 'F16') return () => bytesOf(f32ToF16(data));
    if (dtype === 'BF16') return () => bytesOf(f32ToBf16(data));
    if (dtype === 'F64') return () => bytesOf(Float64Array.from(data));
  } else if (data instanceof Float64Array && dtype === 'F32') {
    return () => bytesOf(new Float32Array(data));
  } else if (isNative(dtype, data)) {
    return () => bytesOf(data);
  }
  throw new SafetensorsError(file, `cannot write ${data.constructor.name} as ${dtype}`, name);
}

function writeFully(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) {
    done += fs.writeSync(fd, bytes, done, Math.min(IO_CHUNK, bytes.length - done));
  }
}

function removeQuietly(file: string): void {
  try {
    fs.rmSync(file, { force: true });
  } catch {
    // Leaving a stray temp file beats masking the error that got us here.
  }
}

/**
 * Writes `target` through a temp file in the same directory, fsyncs it and renames it over the
 * target, so a crash or a failed write leaves either the old file or the new one — never a torn one.
 */
/** A JSON document written atomically (pretty, newline-terminated): configs, sidecars, manifests. */
export function writeJsonAtomic(target: string, value: unknown): void {
  const bytes = Buffer.from(JSON.stringify(value, null, 2) + '\n', 'utf8');
  writeFileAtomic(target, (fd) => {
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(fd, bytes, done);
  });
}

export function writeFileAtomic(target: string, write: (fd: number) => void): void {
  const tmp = `${target}.tmp-${process.pid}`;
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'w');
  } catch (err) {
    throw new Error(`${target}: cannot create ${path.basename(tmp)} (${(err as NodeJS.ErrnoException).code ?? String(err)}); is the directory writable?`, { cause: err });
  }
  try {
    write(fd);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    removeQuietly(tmp);
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${target}: write failed, previous file left unchanged: ${code ? `${code} ` : ''}${(err as Error).message}`, { cause: err });
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, target);
  } catch (err) {
    removeQuietly(tmp);
    throw new Error(`${target}: rename from ${path.basename(tmp)} failed (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
  // The rename is durable only once the directory entry is flushed; not every platform allows it.
  try {
    const dfd = fs.openSync(path.dirname(target), 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {
    /* best effort */
  }
}

/**
 * Writes one safetensors file atomically. Tensors are laid out by element size (largest first), then
 * name, which keeps every tensor aligned to its element size given the 8-byte-padded header, so a
 * reader can view the bytes in place.
 */
export function writeSafetensors(file: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  assertLittleEndian();
  const seen = new Set<string>();
  for (const t of tensors) {
    if (t.name === '__metadata__' || t.name === '') throw new SafetensorsError(file, 'reserved or empty tensor name', t.name);
    if (seen.has(t.name)) throw new SafetensorsError(file, 'duplicate tensor name', t.name);
    seen.add(t.name);
    if (!isDtype(t.dtype)) throw new SafetensorsError(file, `unknown dtype ${JSON.stringify(t.dtype)}`, t.name);
    if (!t.shape.every((d) => isCount(d))) throw new SafetensorsError(file, `shape [${t.shape.join(', ')}] is not a list of non-negative integers`, t.name);
  }
  const ordered = [...tensors].sort(
    (a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
  const encoders = ordered.map((t) => encoder(file, t));
  // No prototype, so that a tensor named "__proto__" is an ordinary key.
  const header: Record<string, unknown> = Object.create(null);
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of ordered) {
    const size = tensorBytes(t.dtype, t.shape);
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  const len = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - (len % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));

  writeFileAtomic(file, (fd) => {
    writeFully(fd, prefix);
    writeFully(fd, headerBytes);
    for (const encode of encoders) writeFully(fd, encode());
  });
}

// ---------------------------------------------------------------------------------------------
// checkpoint directories

/** Read access to a checkpoint directory, single-file or sharded; shards are opened on first use. */
export interface Checkpoint {
  readonly dir: string;
  names(): string[];
  has(name: string): boolean;
  shape(name: string): number[];
  dtype(name: string): Dtype;
  readF32(name: string): Float32Array;
  readRaw(name: string): RawTensor;
  close(): void;
}

const SHARD_RE = /^model-\d{5}-of-\d{5}\.safetensors$/;

function shardName(k: number, n: number): string {
  return `model-${String(k).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
}

class SingleFileCheckpoint implements Checkpoint {
  readonly dir: string;
  private readonly file: SafetensorsFile;
  constructor(dir: string, file: SafetensorsFile) {
    this.dir = dir;
    this.file = file;
  }
  names(): string[] { return this.file.names(); }
  has(name: string): boolean { return this.file.has(name); }
  shape(name: string): number[] { return this.file.shape(name); }
  dtype(name: string): Dtype { return this.file.dtype(name); }
  readF32(name: string): Float32Array { return this.file.readF32(name); }
  readRaw(name: string): RawTensor { return this.file.readRaw(name); }
  close(): void { this.file.close(); }
}

class ShardedCheckpoint implements Checkpoint {
  readonly dir: string;
  private readonly indexPath: string;
  private readonly weightMap: Map<string, string>;
  private readonly open = new Map<string, SafetensorsFile>();

  constructor(dir: string, indexPath: string, weightMap: Map<string, string>) {
    this.dir = dir;
    this.indexPath = indexPath;
    this.weightMap = weightMap;
  }

  names(): string[] { return [...this.weightMap.keys()]; }
  has(name: string): boolean { return this.weightMap.has(name); }
  shape(name: string): number[] { return this.shardFor(name).shape(name); }
  dtype(name: string): Dtype { return this.shardFor(name).dtype(name); }
  readF32(name: string): Float32Array { return this.shardFor(name).readF32(name); }
  readRaw(name: string): RawTensor { return this.shardFor(name).readRaw(name); }

  close(): void {
    for (const f of this.open.values()) f.close();
    this.open.clear();
  }

  private shardFor(name: string): SafetensorsFile {
    const shard = this.weightMap.get(name);
    if (shard === undefined) {
      throw new SafetensorsError(this.indexPath, `no tensor "${name}" in weight_map (${this.weightMap.size} tensors)`);
    }
    let file = this.open.get(shard);
    if (file) return file;
    const listed = [...this.weightMap].filter(([, s]) => s === shard).map(([n]) => n);
    const shardPath = path.join(this.dir, shard);
    if (!fs.existsSync(shardPath)) {
      throw new SafetensorsError(
        this.indexPath,
        `shard "${shard}" (holding ${listed.length} tensors, e.g. "${listed[0]}") is missing from ${this.dir}; ` +
          'the download is incomplete — re-download the checkpoint',
      );
    }
    file = SafetensorsFile.open(shardPath);
    // Check the whole shard against the index once, so a stale index fails here and not mid-load.
    const absent = listed.filter((n) => !file!.has(n));
    if (absent.length > 0) {
      file.close();
      throw new SafetensorsError(
        shardPath,
        `${INDEX_FILE} places ${absent.length} tensors here that the file does not contain (e.g. "${absent[0]}"); ` +
          `the index and shards are from different exports — ${REEXPORT}`,
      );
    }
    this.open.set(shard, file);
    return file;
  }
}

function readIndex(indexPath: string): Map<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (err) {
    throw new SafetensorsError(indexPath, `cannot read the index (${(err as Error).message}); ${REEXPORT}`, undefined, { cause: err });
  }
  const weightMap = isPlainObject(parsed) ? parsed.weight_map : undefined;
  if (!isPlainObject(weightMap)) throw new SafetensorsError(indexPath, `has no "weight_map" object; ${REEXPORT}`);
  const out = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // Shard names come from a file we did not write; a path in them could point anywhere on disk.
    if (typeof shard !== 'string' || shard === '' || shard !== path.basename(shard) || shard === '.' || shard === '..' || shard.includes('\\')) {
      throw new SafetensorsError(indexPath, `weight_map maps "${name}" to ${JSON.stringify(shard)}, which is not a file name in the checkpoint directory`);
    }
    out.set(name, shard);
  }
  return out;
}

/** Opens a Hugging Face checkpoint directory. Like transformers, prefers `model.safetensors` over an index. */
export function openCheckpoint(dir: string): Checkpoint {
  const single = path.join(dir, SINGLE_FILE);
  const index = path.join(dir, INDEX_FILE);
  if (fs.existsSync(single)) {
    if (fs.existsSync(index)) log.warn({ dir }, `both ${SINGLE_FILE} and ${INDEX_FILE} present; using ${SINGLE_FILE}`);
    return new SingleFileCheckpoint(dir, SafetensorsFile.open(single));
  }
  if (fs.existsSync(index)) return new ShardedCheckpoint(dir, index, readIndex(index));
  let hint = '';
  try {
    const files = fs.readdirSync(dir);
    if (files.some((f) => f.endsWith('.bin') || f.endsWith('.pt') || f.endsWith('.pth'))) {
      hint = ' It has PyTorch pickle weights: convert them to safetensors first (transformers save_pretrained(safe_serialization=True)).';
    }
  } catch (err) {
    throw new SafetensorsError(dir, `cannot read the checkpoint directory (${(err as NodeJS.ErrnoException).code ?? String(err)})`, undefined, { cause: err });
  }
  throw new SafetensorsError(dir, `no ${SINGLE_FILE} or ${INDEX_FILE}.${hint}`);
}

export interface WriteCheckpointOptions {
  /** Largest shard in tensor bytes; a single tensor larger than this gets a shard of its own. */
  maxShardBytes?: number;
  /** Written into every file's `__metadata__`, after `format: "pt"`. */
  metadata?: Record<string, string>;
}

/**
 * Writes tensors in the Hugging Face layout and returns the file names written. Shards are filled in
 * the given order (pass tensors in layer order so a block range lands in few shards). Each file is
 * atomic; the directory as a whole is not, so write into a fresh directory when a crash mid-save
 * must not mix two checkpoints. Files of an earlier save that the new layout does not use are removed
 * after the new files are in place.
 */
export function writeCheckpoint(dir: string, tensors: readonly TensorToWrite[], options: WriteCheckpointOptions = {}): string[] {
  const maxShardBytes = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(maxShardBytes > 0)) throw new Error(`writeCheckpoint: maxShardBytes must be positive, got ${maxShardBytes}`);
  // transformers refuses safetensors files whose metadata lacks a known "format".
  const metadata = { format: 'pt', ...options.metadata };
  const seen = new Set<string>();
  for (const t of tensors) {
    if (seen.has(t.name)) throw new SafetensorsError(dir, 'duplicate tensor name', t.name);
    seen.add(t.name);
    if (!isDtype(t.dtype)) throw new SafetensorsError(dir, `unknown dtype ${JSON.stringify(t.dtype)}`, t.name);
  }
  fs.mkdirSync(dir, { recursive: true });

  const groups: TensorToWrite[][] = [];
  let current: TensorToWrite[] = [];
  let currentBytes = 0;
  let totalBytes = 0;
  for (const t of tensors) {
    const size = tensorBytes(t.dtype, t.shape);
    totalBytes += size;
    if (current.length > 0 && currentBytes + size > maxShardBytes) {
      groups.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(t);
    currentBytes += size;
  }
  if (current.length > 0 || groups.length === 0) groups.push(current);

  let written: string[];
  if (groups.length === 1) {
    writeSafetensors(path.join(dir, SINGLE_FILE), groups[0], metadata);
    written = [SINGLE_FILE];
  } else {
    written = groups.map((_, i) => shardName(i + 1, groups.length));
    const weightMap = new Map<string, string>();
    groups.forEach((group, i) => {
      writeSafetensors(path.join(dir, written[i]), group, metadata);
      for (const t of group) weightMap.set(t.name, written[i]);
    });
    const sortedMap = Object.fromEntries([...weightMap].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
    const indexJson = JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: sortedMap }, null, 2) + '\n';
    // The index goes last: it is what makes the new shards visible to a reader.
    writeFileAtomic(path.join(dir, INDEX_FILE), (fd) => writeFully(fd, Buffer.from(indexJson, 'utf8')));
    written.push(INDEX_FILE);
  }

  const keep = new Set(written);
  for (const f of fs.readdirSync(dir)) {
    if (keep.has(f)) continue;
    if (f === SINGLE_FILE || f === INDEX_FILE || SHARD_RE.test(f)) {
      log.debug({ dir, file: f }, 'removing file of an earlier checkpoint layout');
      fs.rmSync(path.join(dir, f), { force: true });
    }
  }
  return written;
}
