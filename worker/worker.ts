// A worker process: registers with the coordinator, builds its block range under the current mask,
// runs the pipeline schedule step after step, applies the optimizer with the global clip scale, and
// follows the coordinator's directives (evaluate, checkpoint, stage transition, re-assign, stop).
import crypto from 'node:crypto';
import os from 'node:os';
import { childLog } from '../common/log.ts';
import type { AssignmentMsg } from '../proto/messages.ts';
import { callMetadata, channelCredentials, checkToken, serverCredentials, type Security } from '../proto/security.ts';
import { closeNats, connectNats } from '../proto/signals.ts';
import { parseRunConfig } from '../recipe/run-config.ts';
import { runAssignment, type RankTransport } from './assignment.ts';
import { CoordinatorClient } from './coordinator-client.ts';
import { isRecoverable, JobAborted } from '../common/errors.ts';
import { PeerLink, PeerServer } from './peer.ts';
import { StageWatcher } from './stage-watcher.ts';
import { prepareModel, type TrainingModel } from './training-model.ts';

const MAX_FAILURES = 30;
/** gRPC status ABORTED: the coordinator's answer to a job that cannot run as registered. */
const ABORTED = 10;

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
}

export async function runWorker(o: WorkerOptions): Promise<void> {
  const workerId = o.workerId ?? `${os.hostname()}-${process.pid}-${crypto.randomBytes(2).toString('hex')}`;
  const log = childLog({ component: 'worker', worker: workerId });
  const sec = o.security ?? {};
  const server = new PeerServer(serverCredentials(sec), (md) => checkToken(sec, md));
  const bound = await server.start(o.host, o.port);
  const peerAddress = o.advertiseHost ? `${o.advertiseHost}:${bound.slice(bound.lastIndexOf(':') + 1)}` : bound;
  const coord = new CoordinatorClient(o.coordinator, channelCredentials(sec), callMetadata(sec));
  const transport: RankTransport = Object.assign(server, { linkUp: (address: string) => new PeerLink(address, server.mailbox, server.expect, channelCredentials(sec), callMetadata(sec)) });
  let model: TrainingModel | null = null;
  let watcher: StageWatcher | null = null;
  let nats: Awaited<ReturnType<typeof connectNats>> | null = null;
  let failures = 0;
  try {
    for (;;) {
      let a: AssignmentMsg;
      try {
        log.info({ coordinator: o.coordinator, peer: peerAddress }, 'registering');
        a = await coord.register({ workerId, peerAddress, device: o.device, memoryBytes: o.memoryBytes ?? Math.floor(os.totalmem() * 0.8), rankHint: o.rankHint ?? -1 });
      } catch (err) {
        // The coordinator refused the job (it does not fit): registering again cannot help.
        if ((err as { code?: unknown }).code === ABORTED) throw new JobAborted(`the coordinator refused the job: ${(err as { details?: string }).details ?? (err as Error).message}`);
        // The coordinator is restarting or unreachable: keep trying with backoff, as a pod would.
        if (!isRecoverable(err) || ++failures > MAX_FAILURES) throw err;
        await backoff(failures, log, err);
        continue;
      }
      const run = parseRunConfig(JSON.parse(a.runConfigJson), 'the coordinator’s run config');
      model ??= prepareModel(run);
      nats ??= await connectNats(a.natsUrl, workerId);
      watcher ??= new StageWatcher(nats, a.jobId, o.natsDelayMs ?? 0);
      try {
        const outcome = await runAssignment(a, run, model, { coord, transport, stages: watcher, workerId, stageTimeoutMs: o.stageTimeoutMs ?? 5000, log });
        if (outcome === 'stop') return;
        failures = 0;
      } catch (err) {
        if (!isRecoverable(err) || ++failures > MAX_FAILURES) throw err;
        await backoff(failures, log, err);
      }
    }
  } finally {
    watcher?.close();
    if (nats) await closeNats(nats);
    coord.close();
    await server.stop();
  }
}

