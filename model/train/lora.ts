// LoRA adapters (Hu et al. 2021) as PEFT initialises and merges them: A ~ kaiming-uniform(a=√5),
// B = 0, so the adapted layer equals the base at step 0; merged weight W + (α/r)·B·A.
import { loraNames } from '../llama/params.ts';
import type { Rng } from '../../common/rng.ts';

export function initLora(rank: number, inp: number, out: number, rng: Rng): { a: Float32Array; b: Float32Array } {
  // kaiming_uniform with a = √5 has bound √(6 / ((1 + 5)·fan_in)) = 1/√fan_in.
  const bound = 1 / Math.sqrt(inp);
  const a = Float32Array.from({ length: rank * inp }, () => (rng.nextFloat() * 2 - 1) * bound);
  return { a, b: new Float32Array(out * rank) };
}

/** W + scale·B·A for W [out, in], A [rank, in], B [out, rank]; returns a new array. */
export function mergeLora(w: Float32Array, a: Float32Array, b: Float32Array, out: number, inp: number, rank: number, scale: number): Float32Array {
  const merged = Float32Array.from(w);
  for (let o = 0; o < out; o++) {
    for (let r = 0; r < rank; r++) {
      const s = scale * b[o * rank + r];
      if (s === 0) continue;
      const row = r * inp;
      const dst = o * inp;
      for (let i = 0; i < inp; i++) merged[dst + i] += s * a[row + i];
    }
  }
  return merged;
}

/** PEFT's tensor name for an adapter weight, so adapter files load with peft. */
export function peftName(name: string): string {
  return `base_model.model.${name}`;
}

export function fromPeftName(name: string): string {
  return name.startsWith('base_model.model.') ? name.slice('base_model.model.'.length) : name;
}

export { loraNames };
