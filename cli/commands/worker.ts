import { runWorker } from '../../worker/worker.ts';
import { dataPlaneOf } from '../../worker/transport.ts';
import { UsageError } from '../args.ts';
import type { Command } from '../command.ts';
import { SECURITY_FLAGS, securityOptions } from '../security-flags.ts';

function usage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export const workerCommand: Command = {
  name: 'worker',
  summary: 'run a pipeline worker: registers with the coordinator and trains the block range it is given',
  usage: 'propipe worker --coordinator host:port [--host H] [--port P] [--device cpu|cuda] [--memory-gb G] [--data-plane socket|grpc]',
  flags: {
    coordinator: { type: 'string', description: 'the coordinator address host:port' },
    host: { type: 'string', description: 'address of this worker’s peer service (reachable by its neighbours)', default: '127.0.0.1' },
    port: { type: 'string', description: 'peer service port (0 = any)', default: '0' },
    device: { type: 'string', description: 'cpu or cuda', default: 'cpu' },
    'memory-gb': { type: 'string', description: 'memory this worker may use (default: 80% of the machine)' },
    'worker-id': { type: 'string', description: 'stable id (e.g. the pod name); random by default' },
    'advertise-host': { type: 'string', description: 'host neighbours dial, when not --host (e.g. the pod’s DNS name under a headless Service)' },
    'rank-hint': { type: 'string', description: 'preferred rank, e.g. $JOB_COMPLETION_INDEX (ranks follow hints, then registration order)' },
    'data-plane': { type: 'string', description: 'what neighbours send tensors over: socket (raw TLS/TCP stream) or grpc (default: PROPIPE_DATA_PLANE, else socket)' },
    'stage-timeout-ms': { type: 'string', description: 'wait this long for a NATS stage signal before asking the coordinator', default: '5000' },
    ...SECURITY_FLAGS,
  },
  async run(f) {
    const device = f.str('device') ?? 'cpu';
    if (device !== 'cpu' && device !== 'cuda') throw new UsageError(`--device must be cpu or cuda, got '${device}'`);
    await runWorker({
      coordinator: f.required('coordinator'),
      host: f.str('host') ?? '127.0.0.1',
      port: f.int('port', 0),
      device,
      memoryBytes: f.has('memory-gb') ? Math.floor(f.num('memory-gb') * 2 ** 30) : undefined,
      workerId: f.str('worker-id'),
      advertiseHost: f.str('advertise-host'),
      rankHint: f.has('rank-hint') ? f.int('rank-hint') : undefined,
      stageTimeoutMs: f.int('stage-timeout-ms', 5000),
      security: securityOptions(f),
      insecure: f.bool('insecure'),
      dataPlane: usage(() => dataPlaneOf(f.str('data-plane') ?? process.env.PROPIPE_DATA_PLANE, f.has('data-plane') ? '--data-plane' : 'PROPIPE_DATA_PLANE')),
      natsDelayMs: process.env.PROPIPE_TEST_NATS_DELAY_MS ? Number(process.env.PROPIPE_TEST_NATS_DELAY_MS) : undefined,
    });
  },
};
