// Reading one safetensors file. Reads go through an fd and positioned reads so that a pipeline
// worker pulls only its own blocks' tensors out of a multi-GB checkpoint.
import fs from 'node:fs';
import { bf16ToF32, f16ToF32 } from './half.ts';
import { assertLittleEndian, DTYPE_BYTES, IO_CHUNK, isCount, isDtype, isPlainObject, MAX_HEADER_BYTES, REEXPORT, SafetensorsError, tensorBytes, type Dtype } from './safetensors-format.ts';

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

