// A small, deterministic byte-level BPE trainer (GPT-2 style) whose output is an ordinary HF
// `tokenizer.json` + `tokenizer_config.json`, so a model initialised from scratch ships a tokenizer
// that transformers, Python `tokenizers` and tokenizers.js all load unchanged.
import { builtinCorpus } from './bpe-corpus.ts';
import { log } from '../../common/log.ts';

export const BOS_TOKEN = '<s>';
export const EOS_TOKEN = '</s>';
export const PAD_TOKEN = '<pad>';
export const IM_START = '<|im_start|>';
export const IM_END = '<|im_end|>';
/** Always present, in this order, at ids 0..4. */
export const CORE_SPECIALS = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, IM_START, IM_END] as const;

// bos is written into the template (not added by the tokenizer) because HF tokenizes rendered chats
// with add_special_tokens=False; this keeps chat and plain-text sequences both starting with <s>.
export const CHATML_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** The GPT-2 pre-tokenizer split, identical to the one the ByteLevel pre-tokenizer applies at encode time. */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

// Pair keys pack two token ids into one double-safe integer.
const PAIR_SHIFT = 2 ** 21;
const MAX_VOCAB = PAIR_SHIFT;

/**
 * GPT-2's byte→char table: printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order, so every byte is a visible, non-space character (merges stay "a b").
 */
export function bytesToUnicode(): string[] {
  const table = new Array<string>(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCharCode(printable(b) ? b : 256 + extra++);
  }
  return table;
}

export interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** The subset of HF's tokenizer.json schema this trainer writes. */
export interface ByteLevelTokenizerJson {
  version: '1.0';
  truncation: null;
  padding: null;
  added_tokens: AddedTokenJson[];
  normalizer: null;
  pre_tokenizer: Record<string, unknown>;
  post_processor: Record<string, unknown>;
  decoder: Record<string, unknown>;
  model: {
    type: 'BPE';
    dropout: null;
    unk_token: null;
    continuing_subword_prefix: null;
    end_of_word_suffix: null;
    fuse_unk: boolean;
    byte_fallback: boolean;
    vocab: Record<string, number>;
    merges: string[];
  };
}

export interface TokenizerConfigJson {
  [key: string]: unknown;
}

export interface BpeTrainOptions {
  /** Written as `model_max_length` in tokenizer_config.json. */
  modelMaxLength?: number;
}

export interface BpeTrainResult {
  tokenizerJson: ByteLevelTokenizerJson;
  tokenizerConfig: TokenizerConfigJson;
  /** Actual vocabulary size: smaller than requested only when the corpus ran out of pairs to merge. */
  vocabSize: number;
  mergeCount: number;
}

/** Max-heap of (count, pair key), ties to the smaller key; stale entries are skipped by the caller. */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }

  private above(i: number, j: number): boolean {
    const ci = this.counts[i], cj = this.counts[j];
    return ci > cj || (ci === cj && this.keys[i] < this.keys[j]);
  }

  private swap(i: number, j: number): void {
    const c = this.counts[i]; this.counts[i] = this.counts[j]; this.counts[j] = c;
    const k = this.keys[i]; this.keys[i] = this.keys[j]; this.keys[j] = k;
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  /** Removes the top; returns [count, key]. */
  pop(): [number, number] {
    const top: [number, number] = [this.counts[0], this.keys[0]];
    const lastC = this.counts.pop()!, lastK = this.keys.pop()!;
    if (this.counts.length > 0) {
      this.counts[0] = lastC;
      this.keys[0] = lastK;
      let i = 0;
      const n = this.counts.length;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < n && this.above(l, m)) m = l;
        if (r < n && this.above(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
}

/** Pre-token frequencies as UTF-8 byte sequences, in first-seen order (keeps training deterministic). */
function countWords(corpus: readonly string[]): { words: Uint8Array[]; freqs: number[] } {
  const encoder = new TextEncoder();
  const index = new Map<string, number>();
  const words: Uint8Array[] = [];
  const freqs: number[] = [];
  for (const doc of corpus) {
    for (const piece of doc.match(GPT2_SPLIT) ?? []) {
      const at = index.get(piece);
      if (at !== undefined) {
        freqs[at]++;
      } else {
        index.set(piece, words.length);
        words.push(encoder.encode(piece));
        freqs.push(1);
      }
    }
  }
  return { words, freqs };
}

/**
 * Learns merges until the vocabulary (specials + 256 bytes + merged tokens) reaches `vocabSize`.
 * `specials` are extra special tokens placed after the five core ones (`<s>`, `</s>`, `<pad>`,
 * `<|im_start|>`, `<|im_end|>`). With no corpus, the built-in one is used.
 */
export function trainByteLevelBpe(
  corpus: readonly string[] | null | undefined,
  vocabSize: number,
  specials: readonly string[] = [],
  options: BpeTrainOptions = {},
): BpeTrainResult {
  const allSpecials: string[] = [...CORE_SPECIALS];
  for (const s of specials) {
    if (typeof s !== 'string' || s.length === 0) throw new Error(`special tokens must be non-empty strings, got ${JSON.stringify(s)}`);
    if (allSpecials.includes(s)) throw new Error(`special token ${JSON.stringify(s)} is listed twice (the core specials are ${CORE_SPECIALS.join(' ')})`);
    allSpecials.push(s);
  }
  const minimum = allSpecials.length + 256;
  if (!Number.isInteger(vocabSize) || vocabSize < minimum) {
    throw new Error(
      `vocab size ${vocabSize} is too small: a byte-level BPE vocabulary needs at least ${minimum} ` +
        `(${allSpecials.length} special tokens + 256 byte tokens)`,
    );
  }
  if (vocabSize > MAX_VOCAB) throw new Error(`vocab size ${vocabSize} exceeds the trainer's limit of ${MAX_VOCAB}`);

  const docs = corpus && corpus.length > 0 ? corpus : builtinCorpus();
  const byteChars = bytesToUnicode();
  const clash = allSpecials.find((s) => byteChars.includes(s));
  if (clash !== undefined) throw new Error(`special token ${JSON.stringify(clash)} is also a byte token; use a longer name`);
  const base = allSpecials.length;
  const tokenStr: string[] = [...allSpecials, ...byteChars];
  const tokenId = new Map<string, number>(tokenStr.map((t, i) => [t, i]));

  const { words: rawWords, freqs } = countWords(docs);
  const words: number[][] = rawWords.map((bytes) => Array.from(bytes, (b) => base + b));

  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, number[]>();
  const addPair = (key: number, delta: number) => pairCount.set(key, (pairCount.get(key) ?? 0) + delta);
  const noteWord = (key: number, w: number) => {
    const list = pairWords.get(key);
    if (list) list.push(w);
    else pairWords.set(key, [w]);
  };
  for (let w = 0; w < words.length; w++) {
    const syms = words[w];
    for (let i = 0; i + 1 < syms.length; i++) {
      const key = syms[i] * PAIR_SHIFT + syms[i + 1];
      addPair(key, freqs[w]);
      noteWord(key, w);
    }
  }
  const heap = new PairHeap();
  for (const [key, count] of pairCount) heap.push(count, key);

  const merges: string[] = [];
  const seenAt = new Int32Array(words.length).fill(-1);
  while (tokenStr.length < vocabSize && heap.size > 0) {
    const [count, key] = heap.pop();
    if (count <= 0 || pairCount.get(key) !== count) continue; // stale entry
    const a = Math.floor(key / PAIR_SHIFT), b = key % PAIR_SHIFT;
    const merged = tokenStr[a] + tokenStr[b];
    // Two merge paths can spell the same string; like HF's trainer, reuse the id and keep both merges.
    let c = tokenId.get(merged);
    if (c === undefined) {
      c = tokenStr.length;
      tokenStr.push(merged);
      tokenId.set(merged, c);
    }
    merges.push(`${tokenStr[a]} ${tokenStr[b]}`);

    const delta = new Map<number, number>();
    const bump = (k: number, d: number, w: number) => {
      delta.set(k, (delta.get(k) ?? 0) + d);
      if (d > 0) noteWord(k, w);
    };
    const affected = pairWords.get(key) ?? [];
    pairWords.delete(key);
    const stamp = merges.length;
    for (const w of affected) {
      if (seenAt[w] === stamp) continue;
      seenAt[w] = stamp;
      const syms = words[w], f = freqs[w];
      const out: number[] = [];
      let changed = false;
      for (let i = 0; i < syms.length; ) {
        if (i + 1 < syms.length && syms[i] === a && syms[i + 1] === b) {
          changed = true;
          bump(key, -f, w);
          if (out.length > 0) {
            const prev = out[out.length - 1];
            bump(prev * PAIR_SHIFT + a, -f, w);
            bump(prev * PAIR_SHIFT + c, f, w);
          }
          if (i + 2 < syms.length) {
            const next = syms[i + 2];
            bump(b * PAIR_SHIFT + next, -f, w);
            bump(c * PAIR_SHIFT + next, f, w);
          }
          out.push(c);
          i += 2;
        } else {
          out.push(syms[i]);
          i += 1;
        }
      }
      if (changed) words[w] = out;
    }
    for (const [k, d] of delta) {
      if (d === 0) continue;
      const now = (pairCount.get(k) ?? 0) + d;
      if (now > 0) {
        pairCount.set(k, now);
        heap.push(now, k);
      } else {
        pairCount.delete(k);
      }
    }
  }
  if (tokenStr.length < vocabSize) {
    log.warn(
      { requested: vocabSize, reached: tokenStr.length },
      'BPE corpus ran out of pairs to merge before reaching the requested vocab size',
    );
  }

  const vocab: Record<string, number> = {};
  tokenStr.forEach((t, i) => {
    if (!(t in vocab)) vocab[t] = i;
  });
  const tokenizerJson = buildTokenizerJson(allSpecials, vocab, merges);
  const tokenizerConfig = buildTokenizerConfig(allSpecials, options.modelMaxLength ?? 2048);
  return { tokenizerJson, tokenizerConfig, vocabSize: tokenStr.length, mergeCount: merges.length };
}

function buildTokenizerJson(specials: string[], vocab: Record<string, number>, merges: string[]): ByteLevelTokenizerJson {
  const bosId = specials.indexOf(BOS_TOKEN);
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const bos = { SpecialToken: { id: BOS_TOKEN, type_id: 0 } };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    // Llama convention: plain-text encodes start with bos (matches add_bos_token in the config).
    post_processor: {
      type: 'TemplateProcessing',
      single: [bos, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [bos, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: BOS_TOKEN, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [BOS_TOKEN]: { id: BOS_TOKEN, ids: [bosId], tokens: [BOS_TOKEN] } },
    },
    decoder: { ...byteLevel, add_prefix_space: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      // "a b" strings rather than [a, b] pairs: every tokenizers release reads them, and byte-level
      // tokens never contain a space.
      merges,
    },
  };
}

function buildTokenizerConfig(specials: string[], modelMaxLength: number): TokenizerConfigJson {
  const addedTokensDecoder: Record<string, Record<string, unknown>> = {};
  specials.forEach((content, id) => {
    addedTokensDecoder[String(id)] = { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  });
  return {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: addedTokensDecoder,
    additional_special_tokens: specials.filter((s) => s !== BOS_TOKEN && s !== EOS_TOKEN && s !== PAD_TOKEN),
    bos_token: BOS_TOKEN,
    eos_token: EOS_TOKEN,
    pad_token: PAD_TOKEN,
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    model_max_length: modelMaxLength,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
}
