// The distillation teacher of one rank: the original model's blocks that fall in this rank's range,
// forward only, over the frozen buffers the student reads (no weights of its own). In LLaMA Pro the
// teacher is the expanded stack without its new blocks, so a range skips those. The teacher's hidden
// state travels to the next rank beside the student's; on the rank with the head, the student's graph
// applies the original norm and LM head to it (range-graph.ts), so the teacher's logits live in that
// session's memory, not in one of their own. With one rank the range is the whole model: same code.
import { childLog } from '../common/log.ts';
import type { QuantizedMatMul } from '../model/llama/params.ts';
import { RangeProgram, type Batch } from '../model/llama/program.ts';
import type { BlockRange } from '../model/llama/range-graph.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import type { TrainingModel } from './training-model.ts';

const log = childLog({ component: 'teacher' });
const NO_TRAINABLES: ReadonlyMap<string, Float32Array> = new Map();

/** The teacher's layers in `range`: every original block, none of the new ones. */
export function teacherLayers(model: Pick<TrainingModel, 'layout'>, range: BlockRange): number[] {
  const layers: number[] = [];
  for (let l = range.start; l < range.end; l++) if (model.layout[l].kind === 'original') layers.push(l);
  return layers;
}

export class RangeTeacher {
  private constructor(
    /** Null on a range with no block and no embedding (the head alone): the hidden state passes through. */
    readonly program: RangeProgram | null,
    /** The blocks this teacher runs (its range without the new blocks). */
    readonly layers: readonly number[],
    /** The rank's range (the program's, with the head). */
    readonly range: BlockRange,
  ) {}

  /** Built over the student's frozen store (and its 4-bit weights, when the run quantizes: the base the student starts from). */
  static async create(model: TrainingModel, range: BlockRange, run: RunConfig, quantized: QuantizedMatMul | null): Promise<RangeTeacher> {
    const layers = teacherLayers(model, range);
    const kept = new Set(layers);
    const skipLayers = new Set<number>();
    for (let l = range.start; l < range.end; l++) if (!kept.has(l)) skipLayers.add(l);
    const program = layers.length === 0 && !range.embed ? null : await RangeProgram.create({
      config: model.config,
      // Blocks only: the norm and head run in the student's graph.
      range: { ...range, head: false },
      trainable: new Set(),
      load: model.load,
      frozen: model.frozenView,
      quantized,
      inputGrad: false,
      skipLayers,
      packed: run.packing,
      device: run.device,
      threads: run.threads,
    });
    log.info({ blocks: layers, skipped: [...skipLayers], embed: range.embed, head: range.head }, 'teacher built for this range');
    return new RangeTeacher(program, layers, range);
  }

  /**
   * The teacher's hidden state after this range's blocks for the micro-batch `b`. It starts from the
   * token ids on the first range and from the previous rank's teacher hidden state (`hidden`) elsewhere.
   */
  async forward(b: Batch, hidden: Float32Array | undefined): Promise<Float32Array> {
    if (!this.program) return hidden!;
    const out = await this.program.forward({ batch: b.batch, seq: b.seq, inputIds: this.range.embed ? b.inputIds : undefined, hidden, positionIds: b.positionIds }, NO_TRAINABLES);
    return out.hiddenOut;
  }

  async release(): Promise<void> {
    await this.program?.release();
  }
}
