// Which parameters receive gradients, from a user's spec: all, none, or blocks like "0,2-3" plus the
// words embed, norm and head.
import type { ModelConfig } from '../model/hf/config.ts';
import { paramSpecs } from '../model/llama/param-specs.ts';

export function parseBlockList(spec: string, numLayers: number): { blocks: Set<number>; extras: Set<string> } {
  const blocks = new Set<number>();
  const extras = new Set<string>();
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    if (part === 'embed' || part === 'norm' || part === 'head') {
      extras.add(part);
      continue;
    }
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new Error(`'${part}' is not a block index, a range like 2-5, or one of embed, norm, head`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo || hi >= numLayers) throw new Error(`block range '${part}' is outside 0..${numLayers - 1}`);
    for (let b = lo; b <= hi; b++) blocks.add(b);
  }
  return { blocks, extras };
}

export function trainableSet(config: ModelConfig, spec: string): Set<string> {
  const specs = paramSpecs(config);
  if (spec === 'all') return new Set(specs.map((s) => s.name));
  if (spec === 'none') return new Set();
  const { blocks, extras } = parseBlockList(spec, config.numLayers);
  return new Set(
    specs
      .filter((s) => (typeof s.layer === 'number' ? blocks.has(s.layer) : extras.has(s.layer)))
      .map((s) => s.name),
  );
}
