// Sequence packing (`packing: true`, as in ms-swift and LLaMA-Factory): short examples share one
// max_length row instead of each padding its own. Each example keeps its own positions (0, 1, ...)
// and, through them, attends only to itself (model/llama/packed-tables.ts); the first token of an
// example carries no label, because the token before it belongs to another example — exactly the
// positions that carry loss when the example stands alone. So the loss per token is unchanged.
import { IGNORE_INDEX } from '../common/labels.ts';
import type { Dataset, Example } from './data.ts';

/** Greedy, in order: an example goes into the current row if it fits, else it opens the next row. */
export function packExamples(examples: readonly Example[], maxLength: number): Example[] {
  const rows: Example[][] = [];
  let row: Example[] = [];
  let used = 0;
  for (const e of examples) {
    if (e.inputIds.length > maxLength) throw new Error(`an example of ${e.inputIds.length} tokens does not fit a packed row of max_length ${maxLength}; truncate the data to max_length first`);
    if (used + e.inputIds.length > maxLength && row.length > 0) {
      rows.push(row);
      row = [];
      used = 0;
    }
    row.push(e);
    used += e.inputIds.length;
  }
  if (row.length > 0) rows.push(row);
  return rows.map(concatRow);
}

function concatRow(parts: readonly Example[]): Example {
  const n = parts.reduce((s, e) => s + e.inputIds.length, 0);
  const inputIds = new Int32Array(n);
  const labels = new Int32Array(n);
  const positions = new Int32Array(n);
  let at = 0;
  for (const e of parts) {
    inputIds.set(e.inputIds, at);
    labels.set(e.labels, at);
    labels[at] = IGNORE_INDEX;
    for (let i = 0; i < e.inputIds.length; i++) positions[at + i] = i;
    at += e.inputIds.length;
  }
  return { inputIds, labels, positions };
}

/** The dataset with its examples packed into rows; the stats still count examples. */
export function packDataset(d: Dataset, maxLength: number): Dataset {
  return { ...d, examples: packExamples(d.examples, maxLength) };
}
