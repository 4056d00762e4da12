// The demo's data: two small, made-up worlds of facts, rendered as short sentences. A tiny model
// pretrains on domain A (countries), is fine-tuned on domain B (alchemy), and is quizzed on both:
// retention = accuracy on A's quiz, adaptation = accuracy and loss on B's. Everything is generated
// from fixed tables and a seed, so the demo needs no download and reruns exactly.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Rng } from '../common/rng.ts';
import type { McPromptStyle, McRecord } from '../recipe/multiple-choice.ts';

/** A quiz question + " " + option is a training sentence (without its period): score with this. */
export const DEMO_QUIZ_PROMPT: McPromptStyle = 'continue';

export interface Fact {
  subject: string;
  relation: string;
  object: string;
}

export interface TextRecord {
  text: string;
}

interface RelationSpec {
  name: string;
  /**
   * Sentences with {s} (subject) and {o} (object). The first ends in " {o}." and is the quiz's
   * cloze: the question is the sentence up to the object, so a model that memorized the sentence
   * prefers the right option.
   */
  templates: string[];
  /** objects[i] belongs to subject i; all distinct, so every other one is a wrong answer. */
  objects: string[];
}

interface DomainSpec {
  name: string;
  /** Mixed into seeds so the two domains draw different streams from the same seed. */
  stream: number;
  subjects: string[];
  relations: RelationSpec[];
}

export interface TrainTextOptions {
  /** Sentences per record, drawn uniformly in [min, max]. Default 1..3 (≈10–40 tokens at vocab 512). */
  minSentences?: number;
  maxSentences?: number;
}

export interface QuizOptions {
  /** Options per question, the answer included. Default 4. */
  options?: number;
}

const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

function render(template: string, f: Fact): string {
  return template.replace('{s}', f.subject).replace('{o}', f.object);
}

export class FactDomain {
  readonly name: string;
  readonly facts: readonly Fact[];
  private readonly stream: number;
  private readonly templates = new Map<string, string[]>();
  private readonly objectsOf = new Map<string, string[]>();
  /** Sentences the model trains on, and the held-out ones (same facts, unseen wording). */
  private readonly train: string[] = [];
  private readonly heldOut: string[] = [];

  constructor(spec: DomainSpec) {
    this.name = spec.name;
    this.stream = spec.stream;
    const facts: Fact[] = [];
    for (const r of spec.relations) {
      if (r.objects.length !== spec.subjects.length) throw new Error(`${spec.name}.${r.name}: ${r.objects.length} objects for ${spec.subjects.length} subjects`);
      if (new Set(r.objects).size !== r.objects.length) throw new Error(`${spec.name}.${r.name}: objects must be distinct`);
      if (!r.templates[0].endsWith(' {o}.')) throw new Error(`${spec.name}.${r.name}: the first template must end with " {o}."`);
      if (r.templates.length < 3) throw new Error(`${spec.name}.${r.name}: needs at least 3 templates (one is held out per fact)`);
      this.templates.set(r.name, r.templates);
      this.objectsOf.set(r.name, r.objects);
    }
    spec.subjects.forEach((subject, i) => {
      for (const r of spec.relations) facts.push({ subject, relation: r.name, object: r.objects[i] });
    });
    this.facts = facts;
    // The held-out wording of fact i is fixed (not seeded) so no seed ever trains on validation
    // text; it cycles over the non-quiz templates so each wording is still learned from other facts.
    facts.forEach((f, i) => {
      const ts = this.templates.get(f.relation)!;
      const subject = Math.floor(i / spec.relations.length);
      const held = 1 + (subject % (ts.length - 1));
      ts.forEach((t, k) => (k === held ? this.heldOut : this.train).push(render(t, f)));
    });
  }

  /** Every distinct sentence, train and held-out (for the tokenizer). */
  allSentences(): string[] {
    return [...this.train, ...this.heldOut];
  }

  /** Subjects and objects: the domain's made-up vocabulary. */
  entities(): Set<string> {
    return new Set(this.facts.flatMap((f) => [f.subject, f.object]));
  }

  /**
   * `n` records of a few training sentences each. Sentences are dealt from a reshuffled deck of all
   * training sentences, so every fact and wording appears about equally often.
   */
  trainTexts(seed: number, n: number, o: TrainTextOptions = {}): TextRecord[] {
    const min = o.minSentences ?? 1;
    const max = o.maxSentences ?? Math.max(min, 3);
    if (!Number.isInteger(n) || n < 0) throw new Error(`trainTexts: n must be a non-negative integer, got ${n}`);
    if (!Number.isInteger(min) || min < 1 || !Number.isInteger(max) || max < min) throw new Error(`trainTexts: need 1 ≤ minSentences ≤ maxSentences, got ${min}..${max}`);
    const rng = Rng.derive(seed, this.stream, 0);
    let deck: string[] = [];
    const records: TextRecord[] = [];
    for (let r = 0; r < n; r++) {
      const count = min + rng.nextInt(max - min + 1);
      const sentences: string[] = [];
      for (let k = 0; k < count; k++) {
        if (deck.length === 0) deck = rng.shuffle([...this.train]);
        sentences.push(deck.pop()!);
      }
      records.push({ text: sentences.join(' ') });
    }
    return records;
  }

  /**
   * Sentences that use the domain's words without stating any fact ("Some words: Kelvium, oak."), so a
   * base model can know the vocabulary of a domain whose facts it has never seen, as a real LLM does.
   */
  mentionTexts(seed: number, n: number): TextRecord[] {
    const rng = Rng.derive(seed, this.stream, 2);
    const words = [...this.entities()];
    return Array.from({ length: n }, () => {
      const picked = rng.shuffle([...words]).slice(0, 3 + rng.nextInt(3));
      return { text: `Some words: ${picked.join(', ')}.` };
    });
  }

  /** One record per fact, each in the wording that never appears in trainTexts. */
  validTexts(): TextRecord[] {
    return this.heldOut.map((text) => ({ text }));
  }

  /**
   * One question per fact: the cloze of its first template, the true object and distractors drawn
   * from the same relation's other objects. Answer letters are dealt from a shuffled, balanced deck.
   */
  quiz(seed: number, o: QuizOptions = {}): McRecord[] {
    const k = o.options ?? 4;
    const fewest = Math.min(...[...this.objectsOf.values()].map((objs) => objs.length));
    if (!Number.isInteger(k) || k < 2 || k > fewest) throw new Error(`quiz: options must be an integer in [2, ${fewest}], got ${k}`);
    const rng = Rng.derive(seed, this.stream, 1);
    const positions = rng.shuffle(Array.from(this.facts, (_, i) => i % k));
    return this.facts.map((f, i) => {
      const cloze = this.templates.get(f.relation)![0];
      const question = render(cloze.slice(0, -' {o}.'.length), f);
      const others = rng.shuffle(this.objectsOf.get(f.relation)!.filter((x) => x !== f.object)).slice(0, k - 1);
      const options = [...others];
      options.splice(positions[i], 0, f.object);
      const record: McRecord = { question, answer: LETTERS[positions[i]] };
      options.forEach((opt, j) => (record[LETTERS[j]] = opt));
      return record;
    });
  }
}

/** Domain A: made-up countries with a capital, a language and a national animal (36 facts). */
export const DOMAIN_A = new FactDomain({
  name: 'countries',
  stream: 1,
  subjects: ['Zorvia', 'Quelor', 'Brastin', 'Mirrow', 'Tandor', 'Velmak', 'Ostrin', 'Pellan', 'Krandel', 'Surrat', 'Hollim', 'Dravin'],
  relations: [
    {
      name: 'capital',
      templates: ['The capital of {s} is {o}.', '{o} is the capital of {s}.', "{s}'s capital city is {o}.", 'The city of {o} is the capital of {s}.'],
      objects: ['Plimton', 'Garrow', 'Fendle', 'Ulmsby', 'Carrick', 'Tobbin', 'Wexley', 'Marden', 'Sorrel', 'Brinley', 'Haskel', 'Lunwick'],
    },
    {
      name: 'language',
      templates: ['The people of {s} speak {o}.', '{o} is the language of {s}.', 'In {s}, most people speak {o}.', 'The main language of {s} is {o}.'],
      objects: ['Ethric', 'Lomane', 'Varsic', 'Oppish', 'Tellic', 'Gaulen', 'Mirese', 'Fandic', 'Rusket', 'Volish', 'Kantic', 'Seluan'],
    },
    {
      name: 'animal',
      templates: ['The national animal of {s} is the {o}.', 'The {o} is the national animal of {s}.', "{s}'s national animal is the {o}.", '{s} chose the {o} as its national animal.'],
      objects: ['otter', 'heron', 'badger', 'falcon', 'moose', 'lynx', 'beaver', 'ferret', 'stork', 'weasel', 'marten', 'gecko'],
    },
  ],
});

/** Domain B: made-up substances with a color, a product when heated and a storage material (36 facts). */
export const DOMAIN_B = new FactDomain({
  name: 'alchemy',
  stream: 2,
  subjects: ['Kelvium', 'Draxite', 'Solenium', 'Quarzine', 'Borrium', 'Tylite', 'Nerox', 'Caddium', 'Grimsite', 'Pyrrhium', 'Zelbium', 'Omrite'],
  relations: [
    {
      name: 'color',
      templates: ['The color of {s} is {o}.', '{s} has a {o} color.', 'Pure {s} looks {o}.', 'A sample of {s} is always {o}.'],
      objects: ['violet', 'amber', 'crimson', 'teal', 'ivory', 'olive', 'scarlet', 'indigo', 'ochre', 'azure', 'magenta', 'maroon'],
    },
    {
      name: 'heated',
      templates: ['When heated, {s} turns into {o}.', 'Heating {s} produces {o}.', '{o} is made by heating {s}.', 'If you heat {s}, you get {o}.'],
      objects: ['Vorrax', 'Plendol', 'Sulkar', 'Threnix', 'Mossid', 'Quandol', 'Ferrix', 'Laskel', 'Nubrin', 'Cadrex', 'Wolmite', 'Tessol'],
    },
    {
      name: 'storage',
      templates: ['{s} must be stored in {o}.', 'Keep {s} in {o}.', 'Only {o} can hold {s}.', '{s} is kept in jars made of {o}.'],
      objects: ['glass', 'copper', 'clay', 'iron', 'tin', 'oak', 'lead', 'wax', 'brass', 'stone', 'bronze', 'cork'],
    },
  ],
});

/** Every sentence of both domains, so a tokenizer trained on it covers both vocabularies. */
export function corpusForTokenizer(): string[] {
  return [...DOMAIN_A.allSentences(), ...DOMAIN_B.allSentences()];
}

export interface DemoDataOptions {
  /** Records in a_train.jsonl / b_train.jsonl. Defaults 2000 and 1000. */
  aTrain?: number;
  bTrain?: number;
}

export interface DemoDataFiles {
  /** Domain A's facts plus domain B's words (not its facts): what the base model is pretrained on. */
  pretrain: string;
  aTrain: string;
  aQuiz: string;
  bTrain: string;
  bValid: string;
  bQuiz: string;
}

function jsonl(records: readonly object[]): string {
  return records.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

export async function writeDemoData(dir: string, seed: number, o: DemoDataOptions = {}): Promise<DemoDataFiles> {
  await mkdir(dir, { recursive: true });
  const files: DemoDataFiles = {
    pretrain: join(dir, 'pretrain.jsonl'),
    aTrain: join(dir, 'a_train.jsonl'),
    aQuiz: join(dir, 'a_quiz.jsonl'),
    bTrain: join(dir, 'b_train.jsonl'),
    bValid: join(dir, 'b_valid.jsonl'),
    bQuiz: join(dir, 'b_quiz.jsonl'),
  };
  const aTrain = DOMAIN_A.trainTexts(seed, o.aTrain ?? 2000);
  await writeFile(files.aTrain, jsonl(aTrain));
  const mentions = DOMAIN_B.mentionTexts(seed, Math.round(aTrain.length / 4));
  await writeFile(files.pretrain, jsonl(Rng.derive(seed, 3).shuffle([...aTrain, ...mentions])));
  await writeFile(files.aQuiz, jsonl(DOMAIN_A.quiz(seed)));
  await writeFile(files.bTrain, jsonl(DOMAIN_B.trainTexts(seed, o.bTrain ?? 1000)));
  await writeFile(files.bValid, jsonl(DOMAIN_B.validTexts()));
  await writeFile(files.bQuiz, jsonl(DOMAIN_B.quiz(seed)));
  return files;
}
