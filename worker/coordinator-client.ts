// Typed promises over the Coordinator service for a worker.
import * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS, loadProto } from '../proto/load.ts';
import type { AckMsg, AssignmentMsg, ExportReportMsg, JobStatusMsg, RegisterRequest, ShardReportMsg, StageInfoMsg, StepDecisionMsg, StepReportMsg } from '../proto/messages.ts';

/**
 * A coordinator that restarted is found within 2 s of listening again: grpc-js would otherwise back its
 * reconnect attempts off towards 2 minutes, and every worker would wait that long after a fail-over.
 */
const COORDINATOR_CHANNEL: grpc.ChannelOptions = { ...CHANNEL_OPTIONS, 'grpc.initial_reconnect_backoff_ms': 250, 'grpc.max_reconnect_backoff_ms': 2000 };

export class CoordinatorClient {
  private readonly client: grpc.Client;

  constructor(address: string, credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(), private readonly metadata = new grpc.Metadata()) {
    const { Coordinator } = loadProto();
    this.client = new Coordinator(address, credentials, COORDINATOR_CHANNEL);
  }

  private call<Req, Res>(method: string, req: Req, deadlineMs?: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      const fn = (this.client as unknown as Record<string, (r: Req, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, res: Res) => void) => void>)[method];
      const options: grpc.CallOptions = deadlineMs ? { deadline: Date.now() + deadlineMs } : {};
      fn.call(this.client, req, this.metadata, options, (err, res) => (err ? reject(err) : resolve(res)));
    });
  }

  register(req: RegisterRequest): Promise<AssignmentMsg> {
    return this.call('Register', req);
  }

  reportStep(req: StepReportMsg): Promise<StepDecisionMsg> {
    return this.call('ReportStep', req);
  }

  commitShard(req: ShardReportMsg): Promise<AckMsg> {
    return this.call('CommitShard', req);
  }

  status(): Promise<JobStatusMsg> {
    return this.call('Status', {}, 10_000);
  }

  currentStage(epoch: number): Promise<StageInfoMsg> {
    return this.call('CurrentStage', { epoch }, 10_000);
  }

  reportExport(req: ExportReportMsg): Promise<AckMsg> {
    return this.call('ReportExport', req, 60_000);
  }

  close(): void {
    this.client.close();
  }
}
