// The distillation teacher of one rank: the original model's blocks that fall in this rank's range,
// forward only, over the frozen buffers the student reads (no weights of its own). In LLaMA Pro the
// teacher is the expanded stack without its new blocks, so a range skips those. The teacher's hidden
// state travels to the next rank beside the student's; the rank with the head turns it into the
// logits the KL term compares against. With one rank the range is the whole model: same code.
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
    readonly program: RangeProgram,
    /** The blocks this teacher runs (its range without the new blocks). */
    readonly layers: readonly number[],
  ) {}

  /** Built over the student's frozen store (and its 4-bit weights, when the run quantizes: the base the student starts from). */
  static async create(model: TrainingModel, range: BlockRange, run: RunConfig, quantized: QuantizedMatMul | null): Promise<RangeTeacher> {
    const layers = teacherLayers(model, range);
    const kept = new Set(layers);
    const skipLayers = new Set<number>();
    for (let l = range.start; l < range.end; l++) if (!kept.has(l)) skipLayers.add(l);
    const program = await RangeProgram.create({
      config: model.config,
      range,
      trainable: new Set(),
      load: model.load,
      frozen: model.frozenView,
      quantized,
      inputGrad: false,
      logits: range.head,
      skipLayers,
      packed: run.packing,
      device: run.device,
      threads: run.threads,
    });
    log.info({ blocks: layers, skipped: [...skipLayers], embed: range.embed, head: range.head }, 'teacher built for this range');
    return new RangeTeacher(program, layers);
  }

  get range(): BlockRange {
    return this.program.range;
  }

  /**
   * The teacher's output for the micro-batch `b`: its hidden state after this range, or the logits on
   * the range with the head. It starts from the token ids on the first range and from the previous
   * rank's teacher hidden state (`hidden`) elsewhere.
   */
  async forward(b: Batch, hidden: Float32Array | undefined): Promise<Float32Array> {
    const out = await this.program.forward({ batch: b.batch, seq: b.seq, inputIds: this.range.embed ? b.inputIds : undefined, hidden, labels: b.labels, positionIds: b.positionIds }, NO_TRAINABLES);
    return this.range.head ? out.logits : out.hiddenOut;
  }

  release(): Promise<void> {
    return this.program.release();
  }
}
