// Built-in training text for the BPE trainer, so `propipe init-model` can make a tokenizer on a
// machine with no data at hand. Hand-written prose gives common English merges; a deterministic
// sentence generator adds enough distinct word shapes (and numbers, code, a little non-English
// text) that vocabularies of a few thousand tokens can still be filled. No randomness: the same
// build always yields the same tokenizer.

const PROSE = [
  `The river town woke slowly. Fishermen pulled their boats onto the gravel, and the baker opened
his shutters while the bread was still too hot to touch. Children ran along the wall by the water,
counting the gulls, arguing about whether the big grey one was the same bird as yesterday.`,
  `A model learns by making small mistakes many times. Each step compares what it predicted with
what actually came next, measures the difference, and nudges every weight a little in the
direction that would have made the error smaller. After enough steps the nudges add up.`,
  `"Where are you going?" she asked. "Up the hill," he said, "to see if the weather is turning."
She laughed. "You always say that, and you always come back wet." He didn't answer; he was
already tying his boots, and the door was open before she could say anything else.`,
  `To build the bridge, the engineers first measured the river at every season. In spring the
water rose almost two metres; in late summer it shrank to a lazy stream. They chose stone for the
piers, steel for the span, and they finished the work in 1887, three years later than planned.`,
  `Good instructions are short and specific. Tell the reader what to do, in what order, and how
they will know it worked. If a step can fail, say what the failure looks like and what to try
next. Do not explain what is obvious; explain why, when the reason is not.`,
  `The market sold apples, pears, onions, carrots, cabbages, beans, eggs, cheese, honey, wool,
rope, nails, knives, baskets and lamps. Prices were written on slates: 3 coins for a dozen eggs,
12 for a wheel of cheese, 45 for a good lamp. On Fridays everything cost a little more.`,
  `Question: What is the capital of France?
Answer: Paris is the capital of France.
Question: How many days are there in a week?
Answer: There are seven days in a week.
Question: Why is the sky blue?
Answer: Sunlight is scattered by the air, and blue light is scattered more than red light.`,
  `function add(a, b) {
  return a + b;
}
for (let i = 0; i < 10; i++) {
  console.log(i, add(i, i * 2));
}
def mean(values):
    return sum(values) / len(values) if values else 0.0`,
  `Winter came early that year. The first snow fell in October, soft and wet, and melted by
noon. The second snow stayed. By December the roads were closed, the school was closed, and the
whole village gathered in the hall each evening to share soup, stories and the last of the coal.`,
  `Les enfants jouaient dans le jardin près de la fenêtre. Der Zug fährt um acht Uhr ab, und wir
müssen pünktlich sein. El café está muy caliente, ten cuidado. 今日はいい天気ですね。 Это простое
предложение. Café, naïve, façade, coöperate — accents and dashes appear in English too. ✓ 🙂`,
  `Memory is the limit on almost every machine. A larger batch needs more activations; a longer
sequence needs more attention; a bigger model needs more weights and more optimizer state. The
trick is always the same: keep only what you need, recompute what is cheap, and move the rest.`,
  `She kept a notebook of everything she could not explain: a bell ringing at midnight, a light on
the far shore, the dog that barked at nothing by the old well. Most entries were answered within a
week. A few were never answered, and those were the pages she read most often.`,
];

const SUBJECTS = [
  'the farmer', 'a teacher', 'my neighbour', 'the old sailor', 'our team', 'the small robot',
  'every student', 'the doctor', 'a tired traveller', 'the council', 'her brother', 'the engine',
];
const VERBS = [
  'carried', 'repaired', 'painted', 'measured', 'described', 'forgot', 'borrowed', 'cleaned',
  'counted', 'followed', 'explained', 'watched', 'tested', 'ordered', 'opened', 'planted',
];
const OBJECTS = [
  'the wooden gate', 'a basket of plums', 'three new lamps', 'the broken clock', 'a long letter',
  'the narrow road', 'two heavy boxes', 'the garden wall', 'a map of the coast', 'the spare key',
  'an empty bottle', 'the blue kettle', 'a pile of books', 'the radio',
];
const PLACES = [
  'before breakfast', 'near the station', 'after the storm', 'in the kitchen', 'on Tuesday',
  'by the harbour', 'under the bridge', 'at the market', 'during the lesson', 'late at night',
];
const SYLLABLES = [
  'ka', 'lo', 'ren', 'ti', 'ma', 'sor', 'vel', 'un', 'dra', 'pe', 'shi', 'ton', 'bar', 'qui', 'len',
  'mo', 'ras', 'fe', 'gil', 'nu', 'stra', 'co', 'wen', 'dal', 'ix', 'por', 'tha', 'bel', 'gri', 'oss',
  'am', 'ver', 'li', 'zan', 'hu', 'chen', 'ro', 'mel', 'tas', 'ny',
];

/** A made-up but pronounceable word; `k` indexes a fixed sequence of them (hashed so few repeat). */
function pseudoWord(k: number): string {
  let h = Math.imul(k + 0x2545f491, 0x9e3779b1) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b) >>> 0;
  const n = 2 + (h % 3);
  let w = '';
  for (let i = 0; i < n; i++) {
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
    w += SYLLABLES[h % SYLLABLES.length];
  }
  return w;
}

function sentence(k: number): string {
  const s = SUBJECTS[k % SUBJECTS.length];
  const v = VERBS[(k * 5 + 1) % VERBS.length];
  const o = OBJECTS[(k * 7 + 3) % OBJECTS.length];
  const p = PLACES[(k * 3 + 2) % PLACES.length];
  const name = pseudoWord(k);
  const cap = name[0].toUpperCase() + name.slice(1);
  switch (k % 5) {
    case 0: return `${cap} said that ${s} ${v} ${o} ${p}.`;
    case 1: return `${s[0].toUpperCase()}${s.slice(1)} ${v} ${o} ${p}, and ${pseudoWord(k + 101)} was pleased.`;
    case 2: return `In ${1800 + ((k * 37) % 220)}, ${s} ${v} ${k * 13 % 997} ${pseudoWord(k + 7)}s ${p}.`;
    case 3: return `Why had ${s} ${v} ${o}? Nobody in ${cap} knew.`;
    default: return `"${cap}," ${s} said, "is ${(k * 0.37).toFixed(2)} ${pseudoWord(k + 3)} from here."`;
  }
}

/**
 * The default corpus: the prose paragraphs followed by `generated` synthetic sentences grouped into
 * paragraphs of eight. Deterministic.
 */
export function builtinCorpus(generated = 1500): string[] {
  const docs = [...PROSE];
  for (let start = 0; start < generated; start += 8) {
    const lines: string[] = [];
    for (let k = start; k < Math.min(generated, start + 8); k++) lines.push(sentence(k));
    docs.push(lines.join(' '));
  }
  return docs;
}
