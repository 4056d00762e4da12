// Every graph the trainer and the evaluator build, for a given architecture, and the (op, dtype)
// pairs they contain: what an execution provider must run.
import type { ModelConfig } from '../../model/hf/config.ts';
import { liveNodes } from '../../model/graph/serialize.ts';
import type { Graph } from '../../model/graph/graph.ts';
import type { FrozenSource } from '../../model/llama/frozen.ts';
import { loraNames } from '../../model/llama/params.ts';
import { programGraphs, type ProgramOptions } from '../../model/llama/program.ts';
import { wholeModel, type BlockRange } from '../../model/llama/range-graph.ts';
import { paramSpecs } from '../../model/llama/param-specs.ts';
import { Quant4Weights } from '../../model/quant/quant4-store.ts';

export interface OpUse {
  op: string;
  domain: string;
  dtype: string;
  /** Where it was seen first, for the failure message. */
  graph: string;
}

/** Frozen weights of the given precision, all zeros (only shapes and types matter here). */
function zeros(config: ModelConfig, dtype: 'float32' | 'float16'): FrozenSource {
  const shapes = new Map(paramSpecs(config).map((s) => [s.name, s.shape]));
  return {
    tensor(name) {
      const shape = shapes.get(name)!;
      const n = shape.reduce((a, b) => a * b, 1);
      return { dtype, shape, data: dtype === 'float32' ? new Float32Array(n) : new Uint16Array(n) };
    },
  };
}

export function trainerGraphs(config: ModelConfig): { name: string; graph: Graph }[] {
  const specs = paramSpecs(config);
  const all = new Set(specs.map((s) => s.name));
  const load = (n: string) => new Float32Array(specs.find((s) => s.name === n)!.shape.reduce((a, b) => a * b, 1));
  const L = config.numLayers;
  const block = (l: number) => new Set(specs.filter((s) => s.layer === l).map((s) => s.name));
  const linears = specs.filter((s) => s.kind === 'linear_weight').map((s) => s.name.replace(/\.weight$/, ''));
  const lora = { rank: 4, alpha: 8, linears: new Set(linears) };
  const loraTrainable = new Set(linears.flatMap((l) => Object.values(loraNames(l))));
  const first: BlockRange = { start: 0, end: 1, embed: true, head: false };
  const middle: BlockRange = { start: 1, end: L - 1, embed: false, head: false };
  const last: BlockRange = { start: L - 1, end: L, embed: false, head: true };
  // Built for the CUDA provider: graph choices that depend on the device are the CUDA ones.
  const base = { config, load, inputGrad: false, device: 'cuda' as const };
  const variants: [string, Omit<ProgramOptions, 'config' | 'load' | 'inputGrad'> & { inputGrad?: boolean }][] = [
    ['full', { range: wholeModel(config), trainable: all }],
    ['lora', { range: wholeModel(config), trainable: loraTrainable, lora }],
    ['llamapro fp16 frozen', { range: wholeModel(config), trainable: block(L - 1), frozen: zeros(config, 'float16') }],
    ['llamapro fp32 frozen', { range: wholeModel(config), trainable: block(L - 1), frozen: zeros(config, 'float32') }],
    ['rank 0 of 3', { range: first, trainable: block(0), frozen: zeros(config, 'float16') }],
    ['middle rank', { range: middle, trainable: block(1), frozen: zeros(config, 'float16'), inputGrad: true }],
    ['last rank, distillation', { range: last, trainable: block(L - 1), frozen: zeros(config, 'float16'), inputGrad: true, distill: { weight: 1, temperature: 2 } }],
    ['evaluation logits', { range: wholeModel(config), trainable: new Set(), logits: true }],
    ['multiple-choice row loss', { range: wholeModel(config), trainable: new Set(), rowLoss: true }],
    ['qlora 4-bit', { range: wholeModel(config), trainable: loraTrainable, lora, quantized: new Quant4Weights(load) }],
  ];
  return variants.flatMap(([name, v]) => {
    const p = programGraphs({ ...base, ...v });
    return [{ name: `${name} forward`, graph: p.forward }, ...(p.backward ? [{ name: `${name} backward`, graph: p.backward }] : [])];
  });
}

/** The distinct (domain, op, dtype of the first input) of the graphs' live nodes. */
export function opUses(graphs: { name: string; graph: Graph }[]): OpUse[] {
  const seen = new Map<string, OpUse>();
  for (const { name, graph } of graphs) {
    for (const n of liveNodes(graph)) {
      const input = n.inputs.find((i) => i !== '');
      const dtype = input ? graph.info(input).dtype : graph.info(n.outputs[0]).dtype;
      const key = `${n.domain ?? ''}:${n.op}:${dtype}`;
      if (!seen.has(key)) seen.set(key, { op: n.op, domain: n.domain ?? '', dtype, graph: name });
    }
  }
  return [...seen.values()].sort((a, b) => `${a.domain}${a.op}${a.dtype}`.localeCompare(`${b.domain}${b.op}${b.dtype}`));
}
