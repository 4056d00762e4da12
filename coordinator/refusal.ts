// The message of a partition that does not fit: which rank of which stage, by how much, and what to do.
import { unconstrainedPartition, type PartitionRequest } from '../plan/partition.ts';

/** Names the rank of the time-balanced split (priced without limits) that overshoots its worker most. */
export function memoryRefusal(req: PartitionRequest, stage: number, stages: number, workerIds: readonly string[], blocks: number): string {
  const free = unconstrainedPartition(req);
  const over = free.map((p, r) => ({ r, p, by: p.memoryBytes - req.workers[r].memoryBytes })).sort((a, b) => b.by - a.by)[0];
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
  const offered = req.workers[over.r];
  return `the run does not fit the workers' memory: stage ${stage + 1}/${stages}, rank ${over.r} (worker ${workerIds[over.r] ?? over.r}, blocks ${over.p.start}..${over.p.end - 1}) needs ${over.p.memoryBytes} bytes (${gib(over.p.memoryBytes)}) but the worker offers ${offered.memoryBytes} bytes (${gib(offered.memoryBytes)}, its --memory-gb${offered.kind === 'gpu' ? ' of CUDA device memory, which includes the CUDA runtime' : ''}); no split of the ${blocks} blocks over ${req.workers.length} workers fits. Add workers or memory, use --quantize 4bit or fewer micro-batches in flight; \`propipe plan\` shows what fits`;
}
