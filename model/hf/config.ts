// Hugging Face `config.json` for the Llama family, validated and normalized into the one shape the
// rest of propipe reads, and written back so that transformers loads the result.
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { log } from '../../common/log.ts';
import { writeJsonAtomic } from '../../common/atomic-file.ts';

export type Arch = 'llama' | 'mistral' | 'qwen2';

export const ARCHITECTURES: Readonly<Record<string, Arch>> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
};

const ARCH_CLASS: Record<Arch, string> = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' };

// transformers' own defaults, used when a config.json leaves a field out.
const DEFAULT_MAX_POSITIONS: Record<Arch, number> = { llama: 2048, mistral: 131072, qwen2: 32768 };
const DEFAULT_SLIDING_WINDOW = 4096;
const DEFAULT_RMS_NORM_EPS = 1e-6;
const DEFAULT_ROPE_THETA = 10000;

export interface ModelConfig {
  arch: Arch;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** The HF `rope_scaling` object (with `rope_type` filled in from a legacy `type`), or null. */
  ropeScaling: Record<string, unknown> | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Bias on q_proj, k_proj and v_proj. */
  qkvBias: boolean;
  oBias: boolean;
  /** Bias on gate_proj, up_proj and down_proj. */
  mlpBias: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
  /**
   * Attention window in tokens, or null for full causal attention. Mistral applies it to every layer;
   * Qwen2 (when use_sliding_window) only to layers >= max_window_layers, which stays in `raw`.
   */
  slidingWindow: number | null;
}

export class ConfigError extends Error {
  readonly file: string;
  readonly field: string | undefined;
  constructor(file: string, field: string | undefined, message: string) {
    super(`${file}: ${message}`);
    this.name = 'ConfigError';
    this.file = file;
    this.field = field;
  }
}

const posInt = z.number().int().positive();
const tokenId = z.number().int();
const jsonObject = z.record(z.string(), z.unknown());

export const hfConfigSchema = z.looseObject({
  architectures: z.array(z.string()).nullish(),
  model_type: z.string().nullish(),
  hidden_size: posInt,
  intermediate_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  num_key_value_heads: posInt.nullish(),
  head_dim: posInt.nullish(),
  vocab_size: posInt,
  rms_norm_eps: z.number().positive().nullish(),
  rope_theta: z.number().positive().nullish(),
  rope_scaling: jsonObject.nullish(),
  // transformers 5 folds rope_theta and rope_scaling into this one object.
  rope_parameters: jsonObject.nullish(),
  max_position_embeddings: posInt.nullish(),
  tie_word_embeddings: z.boolean().nullish(),
  attention_bias: z.boolean().nullish(),
  mlp_bias: z.boolean().nullish(),
  hidden_act: z.string().nullish(),
  bos_token_id: tokenId.nullish(),
  eos_token_id: z.union([tokenId, z.array(tokenId)]).nullish(),
  pad_token_id: tokenId.nullish(),
  torch_dtype: z.string().nullish(),
  sliding_window: posInt.nullish(),
  use_sliding_window: z.boolean().nullish(),
});

export type HfConfig = z.infer<typeof hfConfigSchema>;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function supportedList(): string {
  return Object.entries(ARCHITECTURES).map(([cls, type]) => `${cls} (model_type "${type}")`).join(', ');
}

function resolveArch(file: string, raw: Record<string, unknown>): Arch {
  const modelType = raw.model_type;
  const classes = Array.isArray(raw.architectures) ? raw.architectures.filter((a): a is string => typeof a === 'string') : [];
  const describe = `model_type ${JSON.stringify(modelType)}, architectures ${JSON.stringify(raw.architectures ?? null)}`;
  // model_type picks the config and model classes in transformers; architectures is a hint.
  if (modelType == null && classes.length === 0) {
    throw new ConfigError(file, 'model_type', `has neither model_type nor architectures; supported: ${supportedList()}`);
  }
  let arch: Arch | undefined;
  if (typeof modelType === 'string') arch = Object.values(ARCHITECTURES).find((a) => a === modelType);
  else arch = classes.map((c) => ARCHITECTURES[c]).find((a) => a !== undefined);
  if (arch === undefined || (classes.length > 0 && !classes.some((c) => ARCHITECTURES[c] === arch))) {
    throw new ConfigError(file, typeof modelType === 'string' ? 'model_type' : 'architectures', `unsupported architecture (${describe}); supported: ${supportedList()}`);
  }
  return arch;
}

function formatIssues(file: string, raw: Record<string, unknown>, issues: readonly z.core.$ZodIssue[]): ConfigError {
  const first = issues[0];
  const parts = issues.map((issue) => {
    const field = issue.path.map(String).join('.');
    const value = issue.path.reduce<unknown>((v, k) => (isPlainObject(v) || Array.isArray(v) ? (v as Record<PropertyKey, unknown>)[k as PropertyKey] : undefined), raw);
    if (value === undefined) return `${field} is missing`;
    return `${field} (${JSON.stringify(value)}): ${issue.message}`;
  });
  return new ConfigError(file, first?.path.map(String).join('.'), parts.join('; '));
}

function normalizeRopeScaling(scaling: Record<string, unknown>): Record<string, unknown> {
  // transformers reads `rope_type` and still accepts the legacy `type`; fill in the modern key.
  if (scaling.rope_type === undefined && scaling.type !== undefined) return { ...scaling, rope_type: scaling.type };
  return { ...scaling };
}

/** Validates and normalizes an already-parsed config.json. `file` names it in errors. */
export function parseConfig(raw: unknown, file = 'config.json'): { config: ModelConfig; raw: Record<string, unknown> } {
  if (!isPlainObject(raw)) throw new ConfigError(file, undefined, 'is not a JSON object');
  const arch = resolveArch(file, raw);
  const parsed = hfConfigSchema.safeParse(raw);
  if (!parsed.success) throw formatIssues(file, raw, parsed.error.issues);
  const c = parsed.data;

  const hiddenAct = c.hidden_act ?? 'silu';
  if (hiddenAct !== 'silu') {
    throw new ConfigError(file, 'hidden_act', `hidden_act is ${JSON.stringify(hiddenAct)}; only "silu" (the SwiGLU MLP of the Llama family) is supported`);
  }
  const numHeads = c.num_attention_heads;
  const numKvHeads = c.num_key_value_heads ?? numHeads;
  // An explicit head_dim (Mistral-Nemo, some Qwen2 variants) decouples q/k/v width from hidden_size.
  if (c.head_dim == null && c.hidden_size % numHeads !== 0) {
    throw new ConfigError(file, 'num_attention_heads', `num_attention_heads (${numHeads}) must divide hidden_size (${c.hidden_size})`);
  }
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(file, 'num_key_value_heads', `num_key_value_heads (${numKvHeads}) must divide num_attention_heads (${numHeads})`);
  }
  const headDim = c.head_dim ?? c.hidden_size / numHeads;
  if (headDim % 2 !== 0) {
    throw new ConfigError(file, 'head_dim', `head_dim (${headDim}) must be even for rotary position embeddings`);
  }

  const ropeParams = c.rope_parameters ?? null;
  const ropeTheta = c.rope_theta ?? (typeof ropeParams?.rope_theta === 'number' ? ropeParams.rope_theta : DEFAULT_ROPE_THETA);
  let ropeScaling: Record<string, unknown> | null = null;
  if (c.rope_scaling) ropeScaling = normalizeRopeScaling(c.rope_scaling);
  else if (ropeParams && (ropeParams.rope_type ?? ropeParams.type ?? 'default') !== 'default') {
    const { rope_theta: _theta, ...scaling } = ropeParams;
    ropeScaling = normalizeRopeScaling(scaling);
  }

  // Biases exactly as transformers builds the modules: Llama reads attention_bias (q, k, v and o)
  // and mlp_bias; Mistral hard-codes no biases; Qwen2 hard-codes q/k/v biases only.
  let qkvBias: boolean;
  let oBias: boolean;
  let mlpBias: boolean;
  if (arch === 'llama') {
    qkvBias = oBias = c.attention_bias ?? false;
    mlpBias = c.mlp_bias ?? false;
  } else {
    qkvBias = arch === 'qwen2';
    oBias = false;
    mlpBias = false;
    if (c.attention_bias || c.mlp_bias) {
      log.warn({ file, arch }, 'attention_bias/mlp_bias are ignored by transformers for this architecture; ignoring them too');
    }
  }

  let slidingWindow: number | null = null;
  if (arch === 'mistral') slidingWindow = c.sliding_window === undefined ? DEFAULT_SLIDING_WINDOW : c.sliding_window;
  else if (arch === 'qwen2' && c.use_sliding_window) slidingWindow = c.sliding_window ?? DEFAULT_SLIDING_WINDOW;

  const eos = c.eos_token_id;
  const config: ModelConfig = {
    arch,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: c.vocab_size,
    rmsNormEps: c.rms_norm_eps ?? DEFAULT_RMS_NORM_EPS,
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings: c.max_position_embeddings ?? DEFAULT_MAX_POSITIONS[arch],
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    qkvBias,
    oBias,
    mlpBias,
    bosTokenId: c.bos_token_id ?? null,
    eosTokenIds: eos == null ? [] : Array.isArray(eos) ? eos.slice() : [eos],
    padTokenId: c.pad_token_id ?? null,
    slidingWindow,
  };
  return { config, raw };
}

/** Reads and validates `<dir>/config.json`. */
export function loadConfig(dir: string): { config: ModelConfig; raw: Record<string, unknown> } {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(file, undefined, code === 'ENOENT' ? `not found; is ${dir} a Hugging Face model directory?` : `cannot read (${code ?? String(err)})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(file, undefined, `invalid JSON (${(err as Error).message}); re-download the model's config.json`);
  }
  return parseConfig(raw, file);
}

export interface HfConfigOptions {
  /** torch_dtype to record; defaults to the raw config's, else "float32". */
  torchDtype?: string;
}

/**
 * The config.json object for `config`: every field of `raw` that propipe does not model is kept,
 * and the fields it does model are overwritten. Throws if the bias layout cannot be expressed by
 * the architecture's HF class.
 */
export function toHfConfig(config: ModelConfig, raw: Record<string, unknown> = {}, options: HfConfigOptions = {}): Record<string, unknown> {
  const out: Record<string, unknown> = { ...raw };
  const { arch } = config;
  const cls = ARCH_CLASS[arch];
  const biasError = (want: string) =>
    new Error(`toHfConfig: ${cls} ${want}, but the config has qkvBias=${config.qkvBias} oBias=${config.oBias} mlpBias=${config.mlpBias}`);

  out.architectures = [cls];
  out.model_type = arch;
  out.hidden_size = config.hiddenSize;
  out.intermediate_size = config.intermediateSize;
  out.num_hidden_layers = config.numLayers;
  out.num_attention_heads = config.numHeads;
  out.num_key_value_heads = config.numKvHeads;
  out.head_dim = config.headDim;
  out.vocab_size = config.vocabSize;
  out.rms_norm_eps = config.rmsNormEps;
  out.max_position_embeddings = config.maxPositionEmbeddings;
  out.tie_word_embeddings = config.tieWordEmbeddings;
  out.hidden_act = 'silu';

  if (isPlainObject(raw.rope_parameters)) {
    out.rope_parameters = { ...(config.ropeScaling ?? { rope_type: 'default' }), rope_theta: config.ropeTheta };
    if ('rope_theta' in raw) out.rope_theta = config.ropeTheta;
    if ('rope_scaling' in raw) out.rope_scaling = config.ropeScaling;
  } else {
    out.rope_theta = config.ropeTheta;
    out.rope_scaling = config.ropeScaling;
  }

  if (arch === 'llama') {
    if (config.qkvBias !== config.oBias) throw biasError('puts attention_bias on q, k, v and o_proj alike');
    out.attention_bias = config.qkvBias;
    out.mlp_bias = config.mlpBias;
  } else if (arch === 'mistral') {
    if (config.qkvBias || config.oBias || config.mlpBias) throw biasError('has no biases');
  } else if (!config.qkvBias || config.oBias || config.mlpBias) {
    throw biasError('has biases on q, k and v only');
  }

  if (arch === 'mistral') {
    out.sliding_window = config.slidingWindow;
  } else if (arch === 'qwen2') {
    out.use_sliding_window = config.slidingWindow !== null;
    if (config.slidingWindow !== null) out.sliding_window = config.slidingWindow;
  }
  // transformers checks layer_types against num_hidden_layers; after block expansion the old list
  // is wrong, and without it transformers derives the list from the sliding-window fields.
  if (Array.isArray(raw.layer_types) && raw.layer_types.length !== config.numLayers) {
    log.info({ from: raw.layer_types.length, to: config.numLayers }, 'dropping stale layer_types from config.json');
    delete out.layer_types;
  }

  out.bos_token_id = config.bosTokenId;
  const ids = config.eosTokenIds;
  out.eos_token_id = ids.length === 0 ? null : ids.length === 1 && !Array.isArray(raw.eos_token_id) ? ids[0] : ids.slice();
  out.pad_token_id = config.padTokenId;

  const dtype = options.torchDtype ?? (typeof raw.torch_dtype === 'string' ? raw.torch_dtype : 'float32');
  out.torch_dtype = dtype;
  // transformers >= 4.56 writes `dtype`; keep the two in step when the raw config has it.
  if ('dtype' in raw) out.dtype = dtype;

  // Sorted keys, as transformers writes them, so that configs diff cleanly.
  return Object.fromEntries(Object.keys(out).sort().map((k) => [k, out[k]]));
}

/** Writes `<dir>/config.json` atomically and returns its path. */
export function writeConfig(dir: string, config: ModelConfig, raw?: Record<string, unknown>, options?: HfConfigOptions): string {
  const file = path.join(dir, 'config.json');
  fs.mkdirSync(dir, { recursive: true });
  writeJsonAtomic(file, toHfConfig(config, raw, options));
  return file;
}
