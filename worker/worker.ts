// A worker process: registers with the coordinator, builds its block range under the current mask,
// runs the pipeline schedule step after step, applies the optimizer with the global clip scale, and
// follows the coordinator's directives (evaluate, checkpoint, stage transition, re-assign, stop).
import crypto from 'node:crypto';
import os from 'node:os';
import { childLog } from '../common/log.ts';
import type { AssignmentMsg } from '../proto/messages.ts';
import { callMetadata, channelCredentials, type Security } from '../proto/security.ts';
import { BackgroundNats } from './nats-background.ts';
import { parseRunConfig } from '../recipe/run-config.ts';
import { runAssignment, type RankTransport } from './assignment.ts';
import { CoordinatorClient } from './coordinator-client.ts';
import { isRecoverable, JobFinished } from '../common/errors.ts';
import { finalFromStatus } from '../proto/errors.ts';
import { checkListener } from '../proto/exposure.ts';
import { advertised, dataPlaneOf, startPeerTransport, type DataPlane } from './transport.ts';
import { StageWatcher } from './stage-watcher.ts';
import type { TrainingModel } from './training-model.ts';
import { openTrainingModel } from './open-model.ts';

const MAX_FAILURES = 30;
/** How often a rank checks over gRPC that its assignment still stands (worker/assignment-watch.ts). */
const WATCH_MS = 2000;

async function backoff(failures: number, log: ReturnType<typeof childLog>, err: unknown): Promise<void> {
  const ms = Math.min(3000, 100 * 2 ** Math.min(failures, 5));
  log.warn({ err: (err as Error).message, retryInMs: ms, failures }, 'lost the assignment; registering again');
  await new Promise((r) => setTimeout(r, ms));
}

export interface WorkerOptions {
  coordinator: string;
  host: string;
  port: number;
  device: 'cpu' | 'cuda';
  memoryBytes?: number;
  workerId?: string;
  /** The host neighbours dial (a stable DNS name), when it is not the address the peer service binds. */
  advertiseHost?: string;
  /** Preferred rank, e.g. a Kubernetes Job's completion index. */
  rankHint?: number;
  /** How long to wait for a stage signal on NATS before asking the coordinator. */
  stageTimeoutMs?: number;
  /** Test hook: hold back every NATS stage delivery by this much. */
  natsDelayMs?: number;
  security?: Security;
  /** Serve the peer service without TLS and a token on a non-loopback address (proto/exposure.ts). */
  insecure?: boolean;
  /** What neighbours send frames over (worker/transport.ts); default PROPIPE_DATA_PLANE, else socket. */
  dataPlane?: DataPlane;
}

/** A lost connection or a transient refusal: register again. Not a job that is over for good. */
function retryable(err: unknown): boolean {
  return isRecoverable(err) && !finalFromStatus(err);
}

export async function runWorker(o: WorkerOptions): Promise<void> {
  const workerId = o.workerId ?? `${os.hostname()}-${process.pid}-${crypto.randomBytes(2).toString('hex')}`;
  const log = childLog({ component: 'worker', worker: workerId });
  const sec = o.security ?? {};
  checkListener('worker peer service', o.host, sec, !!o.insecure);
  const plane = o.dataPlane ?? dataPlaneOf(process.env.PROPIPE_DATA_PLANE, 'PROPIPE_DATA_PLANE');
  const peers = await startPeerTransport(plane, sec, o.host, o.port, workerId);
  const peerAddress = o.advertiseHost ? advertised(peers.address, o.advertiseHost) : peers.address;
  log.info({ dataPlane: plane, peer: peerAddress }, 'serving peer frames');
  const coord = new CoordinatorClient(o.coordinator, channelCredentials(sec), callMetadata(sec));
  const transport: RankTransport = peers.transport;
  let model: TrainingModel | null = null;
  let watcher: StageWatcher | null = null;
  let nats: BackgroundNats | null = null;
  let failures = 0;
  try {
    for (;;) {
      let a: AssignmentMsg;
      try {
        log.info({ coordinator: o.coordinator, peer: peerAddress }, 'registering');
        a = await coord.register({ workerId, peerAddress, device: o.device, memoryBytes: o.memoryBytes ?? Math.floor(os.totalmem() * 0.8), rankHint: o.rankHint ?? -1 });
      } catch (err) {
        // The coordinator is restarting or unreachable: keep trying with backoff, as a pod would.
        // A status that says the job is over for good stops this worker instead (proto/errors.ts).
        const final = finalFromStatus(err);
        if (final instanceof JobFinished) return log.info({ why: final.message }, 'the job is over: nothing to do');
        if (!retryable(err) || ++failures > MAX_FAILURES) throw final ?? err;
        await backoff(failures, log, err);
        continue;
      }
      const run = parseRunConfig(JSON.parse(a.runConfigJson), 'the coordinator’s run config');
      model ??= openTrainingModel(run);
      if (!watcher) {
        const w = (watcher = new StageWatcher(null, a.jobId, o.natsDelayMs ?? 0));
        nats = new BackgroundNats(a.natsUrl, workerId, sec, log, (nc) => w.attach(nc));
      }
      try {
        const outcome = await runAssignment(a, run, model, { coord, transport, stages: watcher, workerId, stageTimeoutMs: o.stageTimeoutMs ?? 5000, log, watchMs: WATCH_MS });
        if (outcome === 'stop') return;
        failures = 0;
      } catch (err) {
        if (!retryable(err) || ++failures > MAX_FAILURES) throw finalFromStatus(err) ?? err;
        await backoff(failures, log, err);
      }
    }
  } finally {
    watcher?.close();
    await nats?.close();
    coord.close();
    await peers.stop();
  }
}

