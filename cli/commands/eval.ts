import { openPretrained } from '../../model/hf/pretrained.ts';
import { evaluateLoss } from '../../tasks/evaluate.ts';
import { readModelData } from '../../recipe/examples.ts';
import { evaluateMcFile } from '../../tasks/multiple-choice.ts';
import { isMcFile, MC_PROMPT_STYLES, type McPromptStyle } from '../../recipe/multiple-choice.ts';
import { evaluateBenchmarkDir, formatBenchmark } from '../../tasks/benchmark-eval.ts';
import type { Split } from '../../tasks/benchmark-data.ts';
import { UsageError } from '../args.ts';
import type { Command } from '../command.ts';
import { DEVICE_FLAGS, deviceOptions } from '../device.ts';

export const evalCommand: Command = {
  name: 'eval',
  summary: 'mean token loss and perplexity of a model on a JSONL dataset, or accuracy on multiple-choice questions',
  usage: 'propipe eval --model DIR --data FILE.jsonl [--json] | propipe eval --model DIR --task ceval|mmlu --data DIR|FILE.csv [--shots 5] [--split val|test]',
  flags: {
    model: { type: 'string', description: 'model directory (HF format)' },
    data: {
      type: 'string',
      description: 'JSONL: text, alpaca, chat or pre-tokenized records, or multiple-choice questions {"question", "A", "B", ..., "answer"}',
    },
    'batch-size': { type: 'string', description: 'examples per forward pass (multiple choice: options)', default: '8' },
    'max-length': { type: 'string', description: 'truncate examples to this many tokens (multiple choice: drop the oldest prompt tokens)' },
    'mc-prompt': {
      type: 'string',
      description: 'multiple choice: "answer" scores question + "\\nAnswer: " + option, "continue" scores question + " " + option',
      default: 'answer',
    },
    task: { type: 'string', description: 'ceval | mmlu: the benchmark in its own CSV layout, k-shot prompts, scored by the answer letter' },
    shots: { type: 'string', description: 'ceval/mmlu: dev-split examples before each question', default: '5' },
    split: { type: 'string', description: 'ceval/mmlu: split to score (default: val for C-Eval, whose test answers are withheld; test for MMLU)' },
    json: { type: 'boolean', description: 'print one JSON object' },
    ...DEVICE_FLAGS,
  },
  async run(f) {
    const model = openPretrained(f.required('model'));
    const data = f.required('data');
    const maxLength = f.has('max-length') ? f.int('max-length') : undefined;
    const batchSize = f.int('batch-size', 8);
    if (f.has('task')) {
      const task = f.str('task');
      if (task !== 'ceval' && task !== 'mmlu') throw new UsageError(`--task must be ceval or mmlu, got '${task}' (for a JSONL multiple-choice file leave --task out)`);
      const split = f.str('split');
      if (split !== undefined && !['dev', 'val', 'test'].includes(split)) throw new UsageError(`--split must be dev, val or test, got '${split}'`);
      const shots = f.int('shots', 5);
      if (shots < 0) throw new UsageError(`--shots must be 0 or more, got ${shots}`);
      const r = await evaluateBenchmarkDir(model, task, data, { shots, split: split as Split | undefined, batchSize, maxLength, ...deviceOptions(f) });
      console.log(f.bool('json') ? JSON.stringify(r) : formatBenchmark(r));
      return;
    }
    if (await isMcFile(data)) {
      const prompt = f.str('mc-prompt') ?? 'answer';
      if (!(MC_PROMPT_STYLES as string[]).includes(prompt)) throw new UsageError(`--mc-prompt must be ${MC_PROMPT_STYLES.join(' or ')}, got '${prompt}'`);
      const r = await evaluateMcFile(model, data, { prompt: prompt as McPromptStyle, batchSize, maxLength, ...deviceOptions(f) });
      if (f.bool('json')) console.log(JSON.stringify({ accuracy: r.accuracy, acc_norm: r.accNorm, questions: r.questions }));
      else console.log(`accuracy ${r.accuracy.toFixed(4)} (${r.correct}/${r.questions})  acc_norm ${r.accNorm.toFixed(4)} (${r.correctNorm}/${r.questions})  questions ${r.questions}`);
      return;
    }
    const { dataset, padId } = await readModelData(model, data, maxLength);
    const r = await evaluateLoss(model, dataset.examples, { batchSize, padId, ...deviceOptions(f) });
    if (f.bool('json')) console.log(JSON.stringify(r));
    else console.log(`loss ${r.loss.toFixed(6)}  perplexity ${r.perplexity.toFixed(3)}  tokens ${r.tokens}`);
  },
};
