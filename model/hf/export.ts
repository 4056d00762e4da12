// What a run leaves behind: the merged model (an ordinary HF checkpoint) and the trained parts alone
// (an adapter directory: new blocks, unfrozen tensors and LoRA in PEFT naming), so one base serves
// several tasks by swapping adapters.
import fs from 'node:fs';
import path from 'node:path';
import { writeConfig, type ModelConfig } from './config.ts';
import { copyCarriedFiles } from './carried-files.ts';
import { writeDirAtomic } from '../../common/atomic-dir.ts';
import { writeExpansionSidecar, type ExpansionInfo } from '../expand/sidecar.ts';
import { loraNames } from '../llama/params.ts';
import { fromPeftName, mergeLora, peftName } from '../train/lora.ts';
import { paramSpecs, splitLayerName } from '../llama/param-specs.ts';
import { openSafetensors, type RawTensor } from './safetensors-read.ts';
import type { Dtype } from './safetensors-format.ts';
import { writeCheckpoint } from './checkpoint.ts';
import { writeSafetensors, type TensorToWrite } from './safetensors-write.ts';

export interface LoraParts {
  rank: number;
  alpha: number;
  linears: string[];
}

export interface TrainedParts {
  config: ModelConfig;
  raw: Record<string, unknown>;
  /** Tensors of the trained stack as the base provides them, in their stored dtype. */
  readBase: (name: string) => RawTensor;
  /** The stored dtype of a base tensor, without reading it (without it, the tensor is read to learn it). */
  baseDtype?: (name: string) => Dtype;
  loadBase: (name: string) => Float32Array;
  /** Every tensor that trained, LoRA factors included, under HF names. */
  trained: ReadonlyMap<string, Float32Array>;
  /**
   * Names of every trained tensor of the whole run, when `trained` holds only some of them (a pipeline
   * rank's): they are float32 in every rank's shard plan, so all ranks plan the same files.
   */
  trainedNames?: ReadonlySet<string>;
  lora: LoraParts | null;
  expansion: ExpansionInfo | null;
}

/**
 * Every tensor of the merged model, in layer order. Data is produced when the tensor is written, so
 * an export holds one tensor at a time beside the trained ones. Untouched tensors are copied byte for byte.
 */
export function mergedTensors(p: TrainedParts): TensorToWrite[] {
  const loraOn = new Set(p.lora?.linears ?? []);
  return paramSpecs(p.config).map((spec) => {
    const trained = p.trained.get(spec.name);
    const linear = spec.name.endsWith('.weight') ? spec.name.slice(0, -'.weight'.length) : '';
    if (p.lora && loraOn.has(linear)) {
      const n = loraNames(linear);
      const [out, inp] = spec.shape;
      const data = () => mergeLora(trained ?? p.loadBase(spec.name), p.trained.get(n.a)!, p.trained.get(n.b)!, out, inp, p.lora!.rank, p.lora!.alpha / p.lora!.rank);
      return { name: spec.name, dtype: 'F32', shape: spec.shape, data };
    }
    if (trained) return { name: spec.name, dtype: 'F32', shape: spec.shape, data: trained };
    if (p.trainedNames?.has(spec.name)) return { name: spec.name, dtype: 'F32', shape: spec.shape, data: () => { throw new Error(`${spec.name} trained on another rank`); } };
    return { name: spec.name, dtype: p.baseDtype?.(spec.name) ?? p.readBase(spec.name).dtype, shape: spec.shape, data: () => p.readBase(spec.name).bytes };
  });
}

export interface MergedLayout {
  maxShardBytes?: number;
  /** Pipeline rank that owns a tensor: shards never mix ranks. */
  partOf?: (name: string) => number;
}

export function writeMergedModel(outDir: string, p: TrainedParts, tokenizerFrom: string, layout: MergedLayout = {}): string {
  return writeDirAtomic(
    outDir,
    (tmp) => {
      writeCheckpoint(tmp, mergedTensors(p), layout);
      writeMergedExtras(tmp, p, tokenizerFrom);
    },
    { replace: true },
  );
}

/** Config, tokenizer and LLaMA Pro sidecar of a merged model directory. */
export function writeMergedExtras(dir: string, p: TrainedParts, tokenizerFrom: string): void {
  writeConfig(dir, p.config, p.raw);
  copyCarriedFiles(tokenizerFrom, dir);
  if (p.expansion) writeExpansionSidecar(dir, p.expansion);
}

const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
const PEFT_CONFIG = 'adapter_config.json';
const PROPIPE_ADAPTER = 'propipe_adapter.json';

export interface AdapterInfo {
  baseModel: string;
  lora: LoraParts | null;
  expansion: ExpansionInfo | null;
  /** Everything else worth keeping: train type, stage plan, run config. */
  run: Record<string, unknown>;
}

export function writeAdapter(outDir: string, p: TrainedParts, info: AdapterInfo): string {
  const shapes = new Map(paramSpecs(p.config).map((s) => [s.name, s.shape]));
  const loraShape = (name: string): number[] => {
    const linear = name.replace(/\.lora_[AB]\.weight$/, '');
    const [out, inp] = shapes.get(`${linear}.weight`)!;
    return name.endsWith('.lora_A.weight') ? [info.lora!.rank, inp] : [out, info.lora!.rank];
  };
  const tensors: TensorToWrite[] = [...p.trained].map(([name, data]) => {
    const isLora = /\.lora_[AB]\.weight$/.test(name);
    return { name: isLora ? peftName(name) : name, dtype: 'F32', shape: isLora ? loraShape(name) : shapes.get(name)!, data };
  });
  return writeDirAtomic(
    outDir,
    (tmp) => {
      writeSafetensors(path.join(tmp, ADAPTER_WEIGHTS), tensors, { format: 'pt' });
      if (info.lora) {
        const targets = [...new Set(info.lora.linears.map((l) => l.slice(l.lastIndexOf('.') + 1)))];
        const peft = {
          peft_type: 'LORA',
          task_type: 'CAUSAL_LM',
          base_model_name_or_path: info.baseModel,
          r: info.lora.rank,
          lora_alpha: info.lora.alpha,
          lora_dropout: 0,
          bias: 'none',
          fan_in_fan_out: false,
          inference_mode: true,
          target_modules: targets,
          layers_to_transform: [...new Set(info.lora.linears.flatMap((l) => splitLayerName(l)?.layer ?? []))].sort((a, b) => a - b),
        };
        fs.writeFileSync(path.join(tmp, PEFT_CONFIG), JSON.stringify(peft, null, 2) + '\n');
      }
      if (info.expansion) writeExpansionSidecar(tmp, info.expansion);
      const own = { base_model: info.baseModel, lora: info.lora, num_hidden_layers: p.config.numLayers, run: info.run };
      fs.writeFileSync(path.join(tmp, PROPIPE_ADAPTER), JSON.stringify(own, null, 2) + '\n');
    },
    { replace: true },
  );
}

export interface ReadAdapter {
  lora: LoraParts | null;
  numLayers: number;
  baseModel: string;
  trained: Map<string, Float32Array>;
  run: Record<string, unknown>;
}

export function readAdapter(dir: string): ReadAdapter {
  const metaFile = path.join(dir, PROPIPE_ADAPTER);
  if (!fs.existsSync(metaFile)) throw new Error(`${dir} is not a propipe adapter (no ${PROPIPE_ADAPTER}); it is written to output_dir/adapter by 'propipe train'`);
  const meta = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as { base_model: string; lora: LoraParts | null; num_hidden_layers: number; run: Record<string, unknown> };
  const f = openSafetensors(path.join(dir, ADAPTER_WEIGHTS));
  const trained = new Map(f.names().map((n) => [fromPeftName(n), f.readF32(n)]));
  f.close();
  return { lora: meta.lora, numLayers: meta.num_hidden_layers, baseModel: meta.base_model, trained, run: meta.run };
}
