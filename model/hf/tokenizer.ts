// HF-format tokenizers (tokenizer.json + tokenizer_config.json) behind one small interface, so data
// loading, serving and init-model never touch @huggingface/tokenizers or jinja directly.
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { log } from '../../common/log.ts';

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

export interface EncodeOptions {
  /** Add the tokenizer's special prefix/suffix (usually bos). Default false. */
  addSpecial?: boolean;
}

export interface DecodeOptions {
  skipSpecial?: boolean;
}

export interface ChatTemplateOptions {
  addGenerationPrompt?: boolean;
  /** Extra template variables (e.g. `enable_thinking`, `tools`), as HF's `**kwargs`. */
  variables?: Record<string, unknown>;
}

export interface TextTokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  /** Whether `encode(text, { addSpecial: true })` starts with bos / ends with eos. */
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly chatTemplate: string | null;
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: readonly number[] | ArrayLike<number>, options?: DecodeOptions): string;
  applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions): string;
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
}

/** Thrown when a model directory has no tokenizer; callers may fall back to pre-tokenized data. */
export class TokenizerMissingError extends Error {
  constructor(readonly dir: string, detail = '') {
    super(
      `no tokenizer.json in ${dir}${detail}: text, alpaca and chat data need a tokenizer, ` +
        `but pre-tokenized data ({"input_ids": [...]}) works without one`,
    );
    this.name = 'TokenizerMissingError';
  }
}

type SpecialValue = string | { content?: unknown } | null | undefined;

/** tokenizer_config.json stores special tokens either as strings or as serialized AddedToken objects. */
function specialContent(value: unknown): string | null {
  const v = value as SpecialValue;
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof v.content === 'string') return v.content;
  return null;
}

function pickChatTemplate(raw: unknown): string | null {
  if (typeof raw === 'string') return raw;
  // Older configs hold a list of named templates; HF uses the one called "default".
  if (Array.isArray(raw)) {
    const named = raw.find((t) => t && typeof t === 'object' && (t as { name?: unknown }).name === 'default') ?? raw[0];
    const template = named && typeof named === 'object' ? (named as { template?: unknown }).template : undefined;
    return typeof template === 'string' ? template : null;
  }
  if (raw && typeof raw === 'object') {
    const template = (raw as Record<string, unknown>).default;
    return typeof template === 'string' ? template : null;
  }
  return null;
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  const text = await readFile(path, 'utf8');
  try {
    const value: unknown = JSON.parse(text);
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a JSON object');
    return value as Record<string, unknown>;
  } catch (err) {
    throw new Error(`cannot parse ${path}: ${(err as Error).message}`);
  }
}

export async function loadTokenizer(dir: string): Promise<TextTokenizer> {
  const jsonPath = join(dir, 'tokenizer.json');
  if (!existsSync(jsonPath)) {
    const spOnly = existsSync(join(dir, 'tokenizer.model'))
      ? ' (only a SentencePiece tokenizer.model, which is not supported: save the tokenizer with transformers to get tokenizer.json)'
      : '';
    throw new TokenizerMissingError(dir, spOnly);
  }
  const tokenizerJson = await readJson(jsonPath);
  const configPath = join(dir, 'tokenizer_config.json');
  const config = existsSync(configPath) ? await readJson(configPath) : {};
  let chatTemplate = pickChatTemplate(config.chat_template);
  // Recent transformers versions save the template as its own file.
  const jinjaPath = join(dir, 'chat_template.jinja');
  if (chatTemplate === null && existsSync(jinjaPath)) chatTemplate = await readFile(jinjaPath, 'utf8');
  return tokenizerFromJson(tokenizerJson, config, chatTemplate, dir);
}

const EOS_GUESSES = ['</s>', '<|endoftext|>', '<|end_of_text|>', '<eos>'];

/** Builds the tokenizer from already-parsed files (also used right after training, without disk). */
export function tokenizerFromJson(
  tokenizerJson: object,
  config: Record<string, unknown> = {},
  chatTemplate: string | null = pickChatTemplate(config.chat_template),
  source = '<memory>',
): TextTokenizer {
  let hf: Tokenizer;
  try {
    const json = tokenizerJson as Record<string, unknown>;
    // tokenizers.js iterates added_tokens unconditionally.
    hf = new Tokenizer(Array.isArray(json.added_tokens) ? json : { ...json, added_tokens: [] }, config);
  } catch (err) {
    throw new Error(`cannot load tokenizer from ${source}: ${(err as Error).message}`);
  }

  const vocab = hf.get_vocab(true);
  let maxId = -1;
  for (const id of vocab.values()) if (id > maxId) maxId = id;
  const vocabSize = maxId + 1;

  const idOf = (key: string): number | null => {
    const content = specialContent(config[key]);
    if (content === null) return null;
    const id = hf.token_to_id(content);
    if (id === undefined) {
      log.warn({ source, token: content, key }, 'special token from tokenizer_config.json is not in the vocabulary; ignoring it');
      return null;
    }
    return id;
  };

  // What the post-processor wraps around a text, found by encoding a probe with and without specials.
  const probe: number[] = hf.encode('a', { add_special_tokens: false }).ids;
  const wrapped: number[] = hf.encode('a', { add_special_tokens: true }).ids;
  let prefix: number[] = [];
  let suffix: number[] = [];
  for (let i = 0; i + probe.length <= wrapped.length; i++) {
    if (probe.every((id, j) => wrapped[i + j] === id)) {
      prefix = wrapped.slice(0, i);
      suffix = wrapped.slice(i + probe.length);
      break;
    }
  }

  let bosId = idOf('bos_token');
  let eosId = idOf('eos_token');
  const padId = idOf('pad_token');
  if (bosId === null && config.bos_token === undefined && prefix.length === 1) bosId = prefix[0];
  if (eosId === null && config.eos_token === undefined) {
    if (suffix.length === 1) eosId = suffix[0];
    else for (const guess of EOS_GUESSES) if (eosId === null) eosId = hf.token_to_id(guess) ?? null;
  }

  // An explicit add_bos_token/add_eos_token wins over the post-processor, as LlamaTokenizerFast does.
  if (bosId !== null && typeof config.add_bos_token === 'boolean') {
    const b = bosId;
    if (config.add_bos_token && prefix[0] !== b) prefix = [b, ...prefix];
    if (!config.add_bos_token) prefix = prefix.filter((id) => id !== b);
  }
  if (eosId !== null && typeof config.add_eos_token === 'boolean') {
    const e = eosId;
    if (config.add_eos_token && suffix[suffix.length - 1] !== e) suffix = [...suffix, e];
    if (!config.add_eos_token) suffix = suffix.filter((id) => id !== e);
  }

  // HF transformers defaults this to false nowadays; tokenizers.js defaults to true, which breaks
  // round trips (" ." → ".").
  const cleanUp = config.clean_up_tokenization_spaces === true;
  // Compiled on first use: a template with Jinja this engine cannot parse must not stop plain-text use.
  let compiled: Template | null = null;
  const template = (): Template => {
    if (chatTemplate === null) {
      throw new Error(`tokenizer from ${source} has no chat_template (tokenizer_config.json or chat_template.jinja)`);
    }
    if (compiled === null) {
      try {
        compiled = new Template(chatTemplate);
      } catch (err) {
        throw new Error(`cannot parse the chat template of ${source}: ${(err as Error).message}`);
      }
    }
    return compiled;
  };

  const specialVars: Record<string, unknown> = {};
  for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token']) {
    const content = specialContent(config[key]);
    if (content !== null) specialVars[key] = content;
  }
  if (Array.isArray(config.additional_special_tokens)) {
    specialVars.additional_special_tokens = config.additional_special_tokens.map(specialContent).filter((s) => s !== null);
  }

  return {
    vocabSize,
    bosId,
    eosId,
    padId,
    addBos: bosId !== null && prefix.includes(bosId),
    addEos: eosId !== null && suffix.includes(eosId),
    chatTemplate,
    encode(text, options = {}) {
      const ids = text.length === 0 ? [] : hf.encode(text, { add_special_tokens: false }).ids;
      return options.addSpecial ? [...prefix, ...ids, ...suffix] : ids;
    },
    decode(ids, options = {}) {
      const list = Array.from(ids as ArrayLike<number>);
      // tokenizers.js throws on an empty list.
      if (list.length === 0) return '';
      return hf.decode(list, { skip_special_tokens: options.skipSpecial ?? false, clean_up_tokenization_spaces: cleanUp });
    },
    applyChatTemplate(messages, options = {}) {
      const compiledTemplate = template();
      const variables: Record<string, unknown> = {
        ...specialVars,
        ...options.variables,
        messages,
        add_generation_prompt: options.addGenerationPrompt ?? false,
      };
      for (const key of Object.keys(variables)) if (variables[key] === undefined) delete variables[key];
      try {
        return compiledTemplate.render(variables);
      } catch (err) {
        throw new Error(`chat template failed: ${(err as Error).message}`);
      }
    },
    tokenToId: (token) => hf.token_to_id(token),
    idToToken: (id) => hf.id_to_token(id),
  };
}

/** Writes tokenizer.json and tokenizer_config.json into `dir` (created if missing). */
export async function writeTokenizer(dir: string, tokenizerJson: object, tokenizerConfig: object): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson, null, 2) + '\n', 'utf8');
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2) + '\n', 'utf8');
}

export { trainByteLevelBpe } from './bpe-train.ts';
