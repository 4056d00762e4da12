// `propipe chat`: a terminal conversation for a quick look at a model or an adapter. Tokens are
// printed as they are generated; the history is kept, so the model sees the whole conversation.
import readline from 'node:readline/promises';
import type { Readable, Writable } from 'node:stream';
import type { ChatMessage } from '../model/hf/tokenizer.ts';
import type { SamplingParams } from './sampling.ts';
import type { Loaded } from './serve.ts';

export interface ChatOptions {
  model: string;
  maxTokens: number;
  sampling: SamplingParams;
  system?: string;
}

export async function chatLoop(served: Loaded, o: ChatOptions, input: Readable, output: Writable): Promise<void> {
  const history: ChatMessage[] = o.system ? [{ role: 'system', content: o.system }] : [];
  const rl = readline.createInterface({ input, output, terminal: (output as { isTTY?: boolean }).isTTY === true });
  const interactive = (output as { isTTY?: boolean }).isTTY === true;
  if (interactive) output.write(`chatting with ${o.model} (an empty line or Ctrl-D ends)\n`);
  // The iterator buffers lines typed (or piped) while an answer is being generated.
  const lines = rl[Symbol.asyncIterator]();
  try {
    for (;;) {
      if (interactive) output.write('> ');
      const next = await lines.next();
      if (next.done || !next.value.trim()) break;
      const line: string = next.value;
      history.push({ role: 'user', content: line });
      const prompt = served.tokenizer.encode(served.tokenizer.applyChatTemplate(history, { addGenerationPrompt: true }));
      const room = served.maxModelLen - prompt.length;
      if (room <= 0) {
        output.write(`[the conversation is ${prompt.length} tokens, over the ${served.maxModelLen}-token context; start a new chat]\n`);
        break;
      }
      const r = await served.engine.generate({
        model: o.model,
        prompt,
        maxTokens: Math.min(o.maxTokens, room),
        n: 1,
        sampling: o.sampling,
        stop: [],
        logprobs: null,
        onDelta: (_c, text) => output.write(text),
      });
      const answer = r.choices[0];
      output.write(answer.finishReason === 'length' ? ' [max tokens]\n' : '\n');
      history.push({ role: 'assistant', content: answer.text });
    }
  } finally {
    rl.close();
  }
}
