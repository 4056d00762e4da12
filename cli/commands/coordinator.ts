import { log } from '../../common/log.ts';
import { startCoordinator } from '../../coordinator/server.ts';
import { JobAborted } from '../../common/errors.ts';
import type { Command } from '../command.ts';
import { SECURITY_FLAGS, securityOptions } from '../security-flags.ts';
import { runConfigFromFlags, runFlagSpecs } from '../run-flags.ts';
import { PIPELINE_FLAGS, pipelineOptions } from '../pipeline-flags.ts';

export const coordinatorCommand: Command = {
  name: 'coordinator',
  summary: 'run the coordinator of a pipelined job (gRPC server; reads config.json only)',
  usage: 'propipe coordinator --config run.yaml --workers N --nats nats://host:4222 [--port P] [--schedule 1f1b|gpipe|zb1] [--micro-batches M]',
  flags: {
    config: { type: 'string', description: 'YAML run file' },
    workers: { type: 'string', description: 'number of workers to wait for' },
    host: { type: 'string', description: 'address to listen on', default: '127.0.0.1' },
    port: { type: 'string', description: 'gRPC port (0 = any)', default: '0' },
    nats: { type: 'string', description: 'NATS server URL', default: 'nats://127.0.0.1:4222' },
    'metrics-port': { type: 'string', description: 'serve Prometheus metrics on this port (/metrics)' },
    'job-id': { type: 'string', description: 'job id (NATS subjects are propipe.<job-id>.*); random by default' },
    'step-timeout-ms': { type: 'string', description: 'a rank that has not reached the step barrier this long after the first one is treated as failed (0 = never)', default: '300000' },
    ...SECURITY_FLAGS,
    ...PIPELINE_FLAGS,
    ...runFlagSpecs(),
  },
  async run(f) {
    const run = runConfigFromFlags(f);
    const p = pipelineOptions(f, run);
    const c = await startCoordinator({
      run: p.run,
      workers: f.int('workers'),
      schedule: p.schedule,
      microBatches: p.microBatches,
      ignoreMask: p.ignoreMask,
      staticPartition: p.staticPartition,
      host: f.str('host') ?? '127.0.0.1',
      port: f.int('port', 0),
      natsUrl: f.str('nats') ?? 'nats://127.0.0.1:4222',
      metricsPort: f.has('metrics-port') ? f.int('metrics-port') : undefined,
      jobId: f.str('job-id'),
      stepTimeoutMs: f.int('step-timeout-ms', 300_000),
      security: securityOptions(f),
      insecure: f.bool('insecure'),
    });
    await c.done;
    await c.close();
    if (c.job.failure) throw c.job.failure;
    if (c.job.abortReason) throw new JobAborted(c.job.abortReason);
    log.info({ step: c.job.state.step }, 'job finished');
  },
};
