// The single-process run: a pipeline of one rank. The coordinator's job (step policy, evaluation,
// checkpoints, result) and the worker's rank loop (schedule, update, shards, export) run in this
// process, joined by in-memory ports, so `propipe train` and `propipe launch` share every rule.
import os from 'node:os';
import { CoordinatorService, type RunResult } from '../coordinator/service.ts';
import { Telemetry } from '../coordinator/telemetry.ts';
import { RunDisplay } from '../console/run-display.ts';
import { childLog } from '../common/log.ts';
import { parseRunConfig, type RunConfig, type RunConfigInput } from '../recipe/run-config.ts';
import { runAssignment } from '../worker/assignment.ts';
import { openFeed } from '../worker/data-feed.ts';
import { JobAborted } from '../common/errors.ts';
import { memoryReport, type MemoryReport } from '../worker/quantization.ts';
import { StageWatcher } from '../worker/stage-watcher.ts';
import { openTrainingModel } from '../worker/open-model.ts';
import { inProcessCoordinator, NoNeighbours } from './in-process.ts';

const log = childLog({ component: 'trainer' });
const WORKER_ID = 'local';

export interface TrainResult extends RunResult {
  /** Bytes of frozen linear weights as stored (4-bit when quantized), and of trainable state. */
  memory: MemoryReport;
}

export class Trainer {
  readonly run: RunConfig;

  constructor(args: RunConfigInput | RunConfig) {
    this.run = parseRunConfig(args, 'Trainer arguments');
  }

  async train(): Promise<TrainResult> {
    const run = this.run;
    const model = openTrainingModel(run);
    // Bad data is refused before anything is written.
    const feed = await openFeed(run, model);
    const watcher = new StageWatcher(null, WORKER_ID);
    const display = new RunDisplay();
    const stages = model.plan.stages.length;
    const telemetry = new Telemetry(run.output_dir, run.resume);
    const service = new CoordinatorService({
      run,
      workers: 1,
      schedule: '1f1b',
      microBatches: run.gradient_accumulation_steps,
      natsUrl: '',
      jobId: WORKER_ID,
      telemetry,
      signals: { stage: (sig) => watcher.deliver(sig, 'memory'), earlyStop: () => undefined, control: (sig) => watcher.onControl(sig) },
      onRecord: (r) => display.observe(r),
    });
    const coord = inProcessCoordinator(service);
    try {
      const a = await coord.register({ workerId: WORKER_ID, peerAddress: '', device: run.device, memoryBytes: os.totalmem(), rankHint: -1 });
      log.info({ trainType: run.train_type, layers: model.config.numLayers, stages, trainableTensors: model.plan.everTrainable.length }, 'run prepared');
      await runAssignment(a, run, model, { coord, transport: new NoNeighbours(), stages: watcher, workerId: WORKER_ID, stageTimeoutMs: 0, log, feed });
      await service.done;
    } finally {
      display.stop();
      await telemetry.close();
    }
    if (!service.result) throw new JobAborted(service.job.abortReason ?? 'the run ended without an export');
    return { ...service.result, memory: memoryReport(run, model, service.result.trainableParams) };
  }
}
