// The coordinator process: reads config.json (never weights), plans, and serves the Coordinator gRPC
// service around the job state machine; signals go out on NATS, metrics over HTTP, the timeline to
// output_dir/trace.json.
import crypto from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { childLog } from '../common/log.ts';
import { CHANNEL_OPTIONS, loadProto } from '../proto/load.ts';
import { statusOf } from '../proto/errors.ts';
import { checkListener, checkNatsUrl } from '../proto/exposure.ts';
import { checkToken, serverCredentials, type Security } from '../proto/security.ts';
import type { ExportReportMsg, RegisterRequest, ShardReportMsg, StepReportMsg } from '../proto/messages.ts';
import type { RunConfig } from '../recipe/run-config.ts';
import type { Job } from './job.ts';
import { CoordinatorService } from './service.ts';
import { connectNats, SignalPublisher } from '../proto/signals.ts';
import { Telemetry } from './telemetry.ts';
import type { ScheduleKind } from '../recipe/schedule-kind.ts';

const log = childLog({ component: 'coordinator' });

export interface CoordinatorOptions {
  run: RunConfig;
  workers: number;
  schedule: ScheduleKind;
  microBatches: number;
  host: string;
  port: number;
  natsUrl: string;
  metricsPort?: number;
  jobId?: string;
  ignoreMask?: boolean;
  staticPartition?: boolean;
  stepTimeoutMs?: number;
  security?: Security;
  /** Serve without TLS and a token on a non-loopback address (proto/exposure.ts). */
  insecure?: boolean;
}

export interface RunningCoordinator {
  address: string;
  metricsPort: number | null;
  job: Job;
  /** Resolves when training is over and the export is written. */
  done: Promise<void>;
  close(): Promise<void>;
}

type Handler<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

function unary<Req, Res>(sec: Security, fn: (req: Req) => Promise<Res> | Res): Handler<Req, Res> {
  return (call, cb) => {
    const denied = checkToken(sec, call.metadata);
    if (denied) return cb(denied);
    Promise.resolve()
      .then(() => fn(call.request))
      .then((res) => cb(null, res))
      .catch((err: Error) => cb(statusOf(err)));
  };
}

export async function startCoordinator(o: CoordinatorOptions): Promise<RunningCoordinator> {
  const run = o.run;
  checkListener('coordinator', o.host, o.security ?? {}, !!o.insecure);
  checkNatsUrl(o.natsUrl, !!o.insecure);
  const jobId = o.jobId ?? crypto.randomBytes(4).toString('hex');
  const nc = await connectNats(o.natsUrl, `coordinator-${jobId}`, o.security);
  const signals = new SignalPublisher(nc, jobId);
  const telemetry = new Telemetry(run.output_dir, run.resume);
  let service: CoordinatorService;
  let metricsPort: number | null;
  try {
    metricsPort = o.metricsPort !== undefined ? await telemetry.serve(o.metricsPort, o.host) : null;
    service = new CoordinatorService({ ...o, jobId, signals, telemetry });
  } catch (err) {
    // A job refused as configured (or a port taken) leaves nothing open that would keep the process up.
    await telemetry.close();
    await signals.close().catch(() => undefined);
    throw err;
  }
  const job = service.job;
  const stack = service.stack;

  const sec = o.security ?? {};
  const { Coordinator } = loadProto();
  const server = new grpc.Server(CHANNEL_OPTIONS);
  server.addService(Coordinator.service, {
    Register: unary(sec, (req: RegisterRequest) => service.register(req)),
    ReportStep: unary(sec, (req: StepReportMsg) => service.reportStep(req)),
    CommitShard: unary(sec, (req: ShardReportMsg) => service.commitShard(req)),
    Status: unary(sec, () => service.status()),
    CurrentStage: unary(sec, () => service.currentStage()),
    ReportExport: unary(sec, (req: ExportReportMsg) => service.reportExport(req)),
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`${o.host}:${o.port}`, serverCredentials(sec), (err, p) => (err ? reject(err) : resolve(p))));
  const address = `${o.host}:${port}`;
  log.info({ address, jobId, tls: !!sec.tls, token: !!sec.token, workers: o.workers, schedule: o.schedule, microBatches: o.microBatches, stages: stack.plan.stages.length, layers: stack.config.numLayers, metricsPort }, 'coordinator listening');
  return {
    address,
    metricsPort,
    job,
    done: service.done,
    close: async () => {
      // Let in-flight answers (the export acknowledgement) reach their workers before closing.
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      await telemetry.close();
      await signals.close().catch(() => undefined);
    },
  };
}
