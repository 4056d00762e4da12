// Gradients of the mean token loss over a whole dataset taken as one batch. The file is processed in
// chunks whose losses are scaled by 1/(all target tokens), so the sum equals the one-batch gradient
// exactly while memory stays bounded.
import { accumulateGrads } from '../model/train/adamw.ts';
import type { Device } from '../model/graph/session.ts';
import { RangeProgram } from '../model/llama/program.ts';
import { wholeModel } from '../model/llama/range-graph.ts';
import type { Pretrained } from '../model/hf/pretrained.ts';
import { makeBatch } from '../recipe/batch.ts';
import type { Example } from '../recipe/data.ts';
import { chunks } from '../recipe/examples.ts';

export interface GradOptions {
  batchSize?: number;
  padId?: number;
  device?: Device;
  threads?: number;
}

export interface GradResult {
  loss: number;
  tokens: number;
  grads: Map<string, Float32Array>;
}

export async function datasetGradients(model: Pretrained, examples: readonly Example[], trainable: ReadonlySet<string>, o: GradOptions = {}): Promise<GradResult> {
  const program = await RangeProgram.create({
    config: model.config,
    range: wholeModel(model.config),
    trainable,
    load: model.load,
    inputGrad: false,
    device: o.device,
    threads: o.threads,
  });
  const params = new Map(program.trainableNames.map((n) => [n, model.load(n)]));
  const batches = [...chunks(examples, o.batchSize ?? 8)].map((c) => makeBatch(c, { padId: o.padId }));
  const tokens = batches.reduce((s, b) => s + b.targetTokens, 0);
  const grads = new Map<string, Float32Array>();
  let lossSum = 0;
  try {
    for (const b of batches) {
      if (!program.hasBackward) {
        lossSum += (await program.forward(b, params)).lossSum;
        continue;
      }
      const r = await program.backward(b, params, { lossScale: 1 / tokens });
      lossSum += r.lossSum!;
      accumulateGrads(grads, r.grads);
    }
  } finally {
    await program.release();
  }
  return { loss: lossSum / tokens, tokens, grads };
}
