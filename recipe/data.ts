// Training data: JSONL files of text, alpaca, chat or pre-tokenized records, turned into token ids
// and *unshifted* labels (HF convention: labels[i] is compared with the logits of position i-1
// after the model's internal shift; -100 positions carry no loss).
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { log } from '../common/log.ts';
import type { ChatMessage, TextTokenizer } from '../model/hf/tokenizer.ts';
import { IGNORE_INDEX } from '../common/labels.ts';

export type RecordFormat = 'text' | 'alpaca' | 'chat' | 'tokens';

export interface Example {
  inputIds: Int32Array;
  labels: Int32Array;
  /** Position of each token within its own example: set on packed rows only (recipe/packing.ts). */
  positions?: Int32Array;
}

export interface EncodeOptions {
  tokenizer?: TextTokenizer | null;
  /** The model's vocab size (may exceed the tokenizer's); defaults to the tokenizer's. */
  vocabSize?: number;
}

export interface ReadJsonlOptions extends EncodeOptions {
  /** Keep at most this many tokens per example (the beginning). */
  maxLength?: number;
}

export interface DatasetStats {
  lines: number;
  examples: number;
  /** Examples left without any target token (after truncation), not kept. */
  dropped: number;
  truncated: number;
  tokens: number;
  targetTokens: number;
  formats: Record<RecordFormat, number>;
}

export interface Dataset {
  file: string;
  examples: Example[];
  stats: DatasetStats;
}

/** A problem with one record; readJsonl prefixes it with file:line. */
export class DataError extends Error {
  constructor(message: string, readonly file?: string, readonly line?: number) {
    super(file !== undefined ? `${file}:${line}: ${message}` : message);
    this.name = 'DataError';
  }
}

/** Loss-bearing positions after the causal shift: labels[0] never has a prediction. */
export function countTargets(labels: ArrayLike<number>): number {
  let n = 0;
  for (let i = 1; i < labels.length; i++) if (labels[i] !== IGNORE_INDEX) n++;
  return n;
}

const FORMAT_HELP =
  'expected {"text"}, {"instruction", "input"?, "output"}, {"messages": [{"role", "content"}]} or {"input_ids", "labels"?}';

/** Format of one record; a line may carry extra keys (alpaca dumps often include a "text" too). */
export function detectFormat(record: Record<string, unknown>): RecordFormat {
  if ('input_ids' in record) return 'tokens';
  if ('messages' in record) return 'chat';
  if ('instruction' in record || 'output' in record) return 'alpaca';
  if ('text' in record) return 'text';
  const keys = Object.keys(record);
  throw new DataError(`unknown record format with keys [${keys.map((k) => JSON.stringify(k)).join(', ')}]; ${FORMAT_HELP}`);
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function needTokenizer(tokenizer: TextTokenizer | null | undefined, format: RecordFormat): TextTokenizer {
  if (!tokenizer) {
    throw new DataError(
      `${format} records need a tokenizer, but none is available (the model directory has no tokenizer.json); ` +
        'add tokenizer files or use pre-tokenized records {"input_ids": [...], "labels"?: [...]}',
    );
  }
  return tokenizer;
}

function fromSegments(segments: { ids: number[]; target: boolean }[]): Example {
  const total = segments.reduce((n, s) => n + s.ids.length, 0);
  const inputIds = new Int32Array(total);
  const labels = new Int32Array(total);
  let at = 0;
  for (const { ids, target } of segments) {
    inputIds.set(ids, at);
    if (target) labels.set(ids, at);
    else labels.fill(IGNORE_INDEX, at, at + ids.length);
    at += ids.length;
  }
  return { inputIds, labels };
}

function encodeText(record: Record<string, unknown>, tok: TextTokenizer): Example {
  const text = record.text;
  if (typeof text !== 'string') throw new DataError(`"text" must be a string, got ${typeName(text)}`);
  if (text.length === 0) throw new DataError('empty "text"');
  const ids = tok.encode(text, { addSpecial: true });
  if (tok.eosId !== null && !tok.addEos) ids.push(tok.eosId);
  return fromSegments([{ ids, target: true }]);
}

// The Stanford Alpaca prompt, the de-facto standard for {"instruction","input","output"} data.
const ALPACA_PREAMBLE = 'Below is an instruction that describes a task';
export function alpacaPrompt(instruction: string, input?: string): string {
  return input
    ? `${ALPACA_PREAMBLE}, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n` +
        `### Instruction:\n${instruction}\n\n### Input:\n${input}\n\n### Response:\n`
    : `${ALPACA_PREAMBLE}. Write a response that appropriately completes the request.\n\n` +
        `### Instruction:\n${instruction}\n\n### Response:\n`;
}

function encodeAlpaca(record: Record<string, unknown>, tok: TextTokenizer): Example {
  const { instruction, input, output } = record;
  if (typeof instruction !== 'string') throw new DataError(`alpaca "instruction" must be a string, got ${typeName(instruction)}`);
  if (input !== undefined && input !== null && typeof input !== 'string') {
    throw new DataError(`alpaca "input" must be a string, got ${typeName(input)}`);
  }
  if (typeof output !== 'string') throw new DataError(`alpaca "output" must be a string, got ${typeName(output)}`);
  const prompt = tok.encode(alpacaPrompt(instruction, input ?? undefined));
  if (tok.addBos && tok.bosId !== null) prompt.unshift(tok.bosId);
  const answer = tok.encode(output);
  if (tok.eosId !== null) answer.push(tok.eosId);
  return fromSegments([
    { ids: prompt, target: false },
    { ids: answer, target: true },
  ]);
}

function checkMessages(value: unknown): ChatMessage[] {
  if (!Array.isArray(value)) throw new DataError(`"messages" must be an array, got ${typeName(value)}`);
  if (value.length === 0) throw new DataError('"messages" is empty');
  value.forEach((m, i) => {
    if (!m || typeof m !== 'object' || Array.isArray(m)) throw new DataError(`messages[${i}] must be an object, got ${typeName(m)}`);
    const { role, content } = m as Record<string, unknown>;
    if (typeof role !== 'string') throw new DataError(`messages[${i}].role must be a string, got ${typeName(role)}`);
    if (typeof content !== 'string') throw new DataError(`messages[${i}].content must be a string, got ${typeName(content)}`);
  });
  return value as ChatMessage[];
}

function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/**
 * Assistant-only masks for any template: render the conversation up to each assistant turn with the
 * generation prompt (where the reply starts) and through that turn (where it ends), and tokenize the
 * pieces between those boundaries separately so every token is wholly prompt or wholly reply.
 */
function encodeChat(record: Record<string, unknown>, tok: TextTokenizer): Example {
  const messages = checkMessages(record.messages);
  if (tok.chatTemplate === null) {
    throw new DataError('chat records need a chat template, but the tokenizer has none (tokenizer_config.json "chat_template")');
  }
  const pieces: { text: string; target: boolean }[] = [];
  let done = '';
  messages.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    const before = tok.applyChatTemplate(messages.slice(0, i), { addGenerationPrompt: true });
    const through = tok.applyChatTemplate(messages.slice(0, i + 1), { addGenerationPrompt: false });
    if (!through.startsWith(done)) {
      throw new DataError(`chat template re-renders earlier turns when message ${i} is added, so assistant masks cannot be derived`);
    }
    // Templates may add text after the generation prompt (e.g. an empty think block) that the
    // history rendering lacks; the reply starts where the two renderings diverge.
    const start = Math.max(done.length, commonPrefixLength(before, through));
    pieces.push({ text: through.slice(done.length, start), target: false }, { text: through.slice(start), target: true });
    done = through;
  });
  const full = tok.applyChatTemplate(messages, { addGenerationPrompt: false });
  if (!full.startsWith(done)) {
    throw new DataError('chat template renders the full conversation differently from its prefixes, so assistant masks cannot be derived');
  }
  pieces.push({ text: full.slice(done.length), target: false });
  // HF tokenizes rendered chats without adding specials: the template carries bos itself.
  return fromSegments(pieces.filter((p) => p.text.length > 0).map((p) => ({ ids: tok.encode(p.text), target: p.target })));
}

function intArray(value: unknown, field: string): number[] {
  if (!Array.isArray(value)) throw new DataError(`"${field}" must be an array of integers, got ${typeName(value)}`);
  value.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isInteger(v)) throw new DataError(`${field}[${i}] must be an integer, got ${JSON.stringify(v)}`);
  });
  return value as number[];
}

function encodeTokens(record: Record<string, unknown>): Example {
  const ids = intArray(record.input_ids, 'input_ids');
  if (ids.length === 0) throw new DataError('"input_ids" is empty');
  const labels = record.labels === undefined || record.labels === null ? ids : intArray(record.labels, 'labels');
  if (labels.length !== ids.length) {
    throw new DataError(`"labels" has ${labels.length} entries but "input_ids" has ${ids.length}; they must match`);
  }
  return { inputIds: Int32Array.from(ids), labels: Int32Array.from(labels) };
}

function checkRange(ex: Example, vocabSize: number | undefined): void {
  if (vocabSize === undefined) return;
  const bad = (v: number) => v < 0 || v >= vocabSize;
  for (let i = 0; i < ex.inputIds.length; i++) {
    if (bad(ex.inputIds[i])) throw new DataError(`input_ids[${i}] = ${ex.inputIds[i]} is outside the vocabulary [0, ${vocabSize})`);
    const l = ex.labels[i];
    if (l !== IGNORE_INDEX && bad(l)) throw new DataError(`labels[${i}] = ${l} is outside the vocabulary [0, ${vocabSize}) and is not ${IGNORE_INDEX}`);
  }
}

/** One parsed JSONL record → ids and labels (untruncated). Throws DataError without a location. */
export function encodeRecord(record: unknown, options: EncodeOptions = {}): { format: RecordFormat; example: Example } {
  if (!record || typeof record !== 'object' || Array.isArray(record)) {
    throw new DataError(`expected a JSON object, got ${typeName(record)}; ${FORMAT_HELP}`);
  }
  const rec = record as Record<string, unknown>;
  const format = detectFormat(rec);
  let example: Example;
  switch (format) {
    case 'tokens':
      example = encodeTokens(rec);
      break;
    case 'text':
      example = encodeText(rec, needTokenizer(options.tokenizer, format));
      break;
    case 'alpaca':
      example = encodeAlpaca(rec, needTokenizer(options.tokenizer, format));
      break;
    case 'chat':
      example = encodeChat(rec, needTokenizer(options.tokenizer, format));
      break;
  }
  checkRange(example, options.vocabSize ?? options.tokenizer?.vocabSize);
  return { format, example };
}

/**
 * Turns JSONL lines into examples with their stats: truncation, dropping examples without targets,
 * file:line errors. `readJsonl` feeds it a stream; the parallel tokenizer feeds it chunks.
 */
export class DatasetBuilder {
  readonly stats: DatasetStats = { lines: 0, examples: 0, dropped: 0, truncated: 0, tokens: 0, targetTokens: 0, formats: { text: 0, alpaca: 0, chat: 0, tokens: 0 } };
  readonly examples: Example[] = [];

  constructor(
    readonly file: string,
    private readonly options: ReadJsonlOptions,
  ) {
    const { maxLength } = options;
    if (maxLength !== undefined && (!Number.isInteger(maxLength) || maxLength < 2)) {
      throw new Error(`maxLength must be an integer ≥ 2, got ${maxLength}`);
    }
  }

  add(raw: string, lineNo: number): void {
    const { maxLength } = this.options;
    const stats = this.stats;
    const line = lineNo === 1 ? raw.replace(/^\uFEFF/, '') : raw;
    if (line.trim().length === 0) return;
    stats.lines++;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch (err) {
      throw new DataError(`invalid JSON: ${(err as Error).message}`, this.file, lineNo);
    }
    let encoded: { format: RecordFormat; example: Example };
    try {
      encoded = encodeRecord(record, this.options);
    } catch (err) {
      throw new DataError((err as Error).message, this.file, lineNo);
    }
    stats.formats[encoded.format]++;
    let { inputIds, labels } = encoded.example;
    if (maxLength !== undefined && inputIds.length > maxLength) {
      inputIds = inputIds.slice(0, maxLength);
      labels = labels.slice(0, maxLength);
      stats.truncated++;
    }
    const targets = countTargets(labels);
    if (targets === 0) {
      stats.dropped++;
      return;
    }
    this.examples.push({ inputIds, labels });
    stats.tokens += inputIds.length;
    stats.targetTokens += targets;
  }

  finish(): Dataset {
    this.stats.examples = this.examples.length;
    return logLoaded({ file: this.file, examples: this.examples, stats: this.stats }, this.options.maxLength);
  }
}

/** The log lines every way of loading a dataset ends with. */
export function logLoaded(d: Dataset, maxLength: number | undefined, extra: Record<string, unknown> = {}): Dataset {
  if (d.stats.dropped > 0) log.warn({ file: d.file, dropped: d.stats.dropped, maxLength }, 'dropped examples with no target tokens (after truncation)');
  log.info({ file: d.file, ...d.stats, ...extra }, 'loaded dataset');
  return d;
}

/** Reads a JSONL file; the first bad line aborts with file:line and what is wrong. */
export async function readJsonl(file: string, options: ReadJsonlOptions = {}): Promise<Dataset> {
  const builder = new DatasetBuilder(file, options);
  const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let lineNo = 0;
  for await (const raw of lines) builder.add(raw, ++lineNo);
  return builder.finish();
}
