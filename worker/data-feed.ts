// Rank 0 owns the data: the training stream of the current stage and the validation batches.
import { optionalTokenizer } from '../model/hf/pretrained.ts';
import { deriveSeed } from '../common/rng.ts';
import { makeBatch, shuffledBatches, type PositionedBatch } from '../recipe/batch.ts';
import type { Dataset } from '../recipe/data.ts';
import { loadDataset } from '../recipe/load-dataset.ts';
import { packDataset } from '../recipe/packing.ts';
import { log } from '../common/log.ts';
import { chunks } from '../recipe/examples.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import type { MicroBatch } from './executor.ts';
import type { TrainingModel } from './training-model.ts';
import { checkEvalTasks } from './final-eval.ts';

export class DataFeed {
  private stream: Generator<PositionedBatch> | null = null;
  constructor(readonly run: RunConfig, readonly train: Dataset, readonly val: Dataset | null, readonly padId: number) {}

  startStage(stage: number, position: { epoch: number; index: number }): void {
    this.stream = shuffledBatches(this.train.examples, { batchSize: this.run.per_device_train_batch_size, seed: deriveSeed(this.run.seed, stage), start: position, dropLast: false, padId: this.padId });
  }

  next(count: number): PositionedBatch[] {
    return Array.from({ length: count }, () => this.stream!.next().value as PositionedBatch);
  }

  valBatches(): MicroBatch[] {
    return this.val ? [...chunks(this.val.examples, this.run.per_device_eval_batch_size)].map((c) => makeBatch(c, { padId: this.padId })) : [];
  }
}

export async function openFeed(run: RunConfig, model: TrainingModel): Promise<DataFeed> {
  const tokenizer = await optionalTokenizer(run.model);
  const opts = { tokenizer, tokenizerDir: tokenizer ? run.model : null, vocabSize: model.config.vocabSize, maxLength: run.max_length };
  const loaded = await loadDataset(run.dataset, opts);
  const train = run.packing ? packDataset(loaded, run.max_length) : loaded;
  if (run.packing) log.info({ examples: loaded.examples.length, rows: train.examples.length, maxLength: run.max_length }, 'packed training examples into rows');
  const val = run.val_dataset ? await loadDataset(run.val_dataset, opts) : null;
  // The final evaluation's data too: a wrong path must not surface only after training.
  await checkEvalTasks(run);
  return new DataFeed(run, train, val, tokenizer?.padId ?? model.config.padTokenId ?? 0);
}
