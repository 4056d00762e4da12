// The pieces of a Llama-family block, each a function that adds its ops to a graph.
import type { ModelConfig } from '../hf/config.ts';
import type { Graph } from '../graph/graph.ts';
import { kernelChoices } from '../graph/kernels.ts';
import { loraNames, type ParamBinder } from './params.ts';

/** y = x·Wᵀ (+ b) (+ scale·(x·Aᵀ)·Bᵀ with a LoRA adapter), W in HF layout [out, in]. */
export function linear(g: Graph, p: ParamBinder, x: string, name: string, out: number, inp: number, bias: boolean): string {
  let y = p.matmulWT(g, x, name, out, inp);
  if (bias) y = g.op('Add', [y, p.get(g, `${name}.bias`, [out])]);
  const lora = p.lora(name);
  if (lora) {
    const names = loraNames(name);
    const a = p.get(g, names.a, [lora.rank, inp]);
    const b = p.get(g, names.b, [out, lora.rank]);
    const mask = p.loraRowMask(g);
    const projected = g.op('MatMul', [x, g.op('Transpose', [a], { perm: [1, 0] })]);
    const down = mask ? g.op('Mul', [projected, mask]) : projected;
    const upd = g.op('MatMul', [down, g.op('Transpose', [b], { perm: [1, 0] })]);
    y = g.op('Add', [y, g.op('Mul', [upd, g.constant(lora.scale, 'float32')])]);
  }
  return y;
}

/**
 * RMSNorm as HF computes it: w · x / sqrt(mean(x²) + eps), as ONNX Runtime's fused kernel. Its second
 * output, 1/sqrt(mean(x²) + eps), is what the gradient rule (autodiff/rules/rms-norm.ts) starts from.
 */
export function rmsNorm(g: Graph, p: ParamBinder, x: string, name: string, config: ModelConfig): string {
  const w = p.get(g, `${name}.weight`, [config.hiddenSize]);
  if (kernelChoices().fusedRmsNorm) return g.opN('SimplifiedLayerNormalization', [x, w], 2, { axis: -1, epsilon: { float: config.rmsNormEps } })[0];
  const meanSq = g.op('ReduceMean', [g.op('Mul', [x, x]), g.i64([-1])], { keepdims: 1 });
  const denom = g.op('Sqrt', [g.op('Add', [meanSq, g.constant(config.rmsNormEps, 'float32')])]);
  return g.op('Mul', [g.op('Div', [x, denom]), w]);
}

export function swiGlu(g: Graph, p: ParamBinder, x: string, prefix: string, config: ModelConfig): string {
  const { hiddenSize: h, intermediateSize: m, mlpBias } = config;
  const gate = linear(g, p, x, `${prefix}.gate_proj`, m, h, mlpBias);
  const up = linear(g, p, x, `${prefix}.up_proj`, m, h, mlpBias);
  const silu = g.op('Mul', [gate, g.op('Sigmoid', [gate])]);
  return linear(g, p, g.op('Mul', [silu, up]), `${prefix}.down_proj`, h, m, mlpBias);
}
