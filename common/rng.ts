// A seedable PRNG whose whole state is one uint32, so a checkpoint can store it as a plain number
// and a resumed run draws exactly the numbers the interrupted one would have drawn.
// Generator: mulberry32 (period 2^32, good enough for shuffles, dropout seeds and init noise).

/** Finalizer from splitmix/murmur3: spreads every input bit over the output, so nearby seeds diverge. */
export function mix32(x: number): number {
  x = Math.imul((x ^ (x >>> 16)) >>> 0, 0x85ebca6b);
  x = Math.imul((x ^ (x >>> 13)) >>> 0, 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Combines a seed with stream numbers (epoch, rank, ...) into one well-mixed seed. */
export function deriveSeed(seed: number, ...streams: number[]): number {
  let h = mix32((seed >>> 0) ^ 0x9e3779b9);
  for (const s of streams) h = mix32((h ^ mix32((s >>> 0) + 0x7f4a7c15)) >>> 0);
  return h;
}

export class Rng {
  private s: number;

  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new Error(`Rng seed must be a finite number, got ${seed}`);
    this.s = seed >>> 0;
  }

  /** Derived generator for an independent stream (e.g. one per epoch) of the same seed. */
  static derive(seed: number, ...streams: number[]): Rng {
    return new Rng(deriveSeed(seed, ...streams));
  }

  get state(): number {
    return this.s;
  }

  set state(value: number) {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
      throw new Error(`Rng state must be a uint32, got ${value}`);
    }
    this.s = value;
  }

  nextUint32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  nextFloat(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, n), unbiased (rejection), n ≤ 2^32. */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > 4294967296) throw new Error(`nextInt bound must be an integer in [1, 2^32], got ${n}`);
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** Standard normal via Box–Muller; draws two uniforms each call so the state stays one number. */
  nextGaussian(): number {
    const u1 = (this.nextUint32() + 1) / 4294967297;
    const u2 = this.nextFloat();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Fisher–Yates in place. */
  shuffle<T extends { length: number; [i: number]: any }>(arr: T): T {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = arr[i];
      arr[i] = arr[j];
      arr[j] = tmp;
    }
    return arr;
  }
}
