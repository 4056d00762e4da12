// Mean token loss and perplexity of a model over a dataset (padding never counted).
import type { Device } from '../model/graph/session.ts';
import { frozenWholeModel } from '../model/llama/program.ts';
import type { Pretrained } from '../model/hf/pretrained.ts';
import { makeBatch } from '../recipe/batch.ts';
import type { Example } from '../recipe/data.ts';
import { chunks } from '../recipe/examples.ts';

export interface EvalOptions {
  batchSize?: number;
  padId?: number;
  device?: Device;
  threads?: number;
}

export interface EvalResult {
  loss: number;
  tokens: number;
  perplexity: number;
}

export async function evaluateLoss(model: Pretrained, examples: readonly Example[], o: EvalOptions = {}): Promise<EvalResult> {
  const program = await frozenWholeModel(model.config, model.load, { device: o.device, threads: o.threads });
  let lossSum = 0;
  let tokens = 0;
  try {
    for (const chunk of chunks(examples, o.batchSize ?? 8)) {
      const out = await program.forward(makeBatch(chunk, { padId: o.padId }), new Map());
      lossSum += out.lossSum;
      tokens += out.tokenCount;
    }
  } finally {
    await program.release();
  }
  const loss = lossSum / tokens;
  return { loss, tokens, perplexity: Math.exp(loss) };
}
