// Names, ports and GPU profiles shared by the manifests, the credentials and the checks.
export const NAMES = {
  nats: 'propipe-nats',
  coordinator: 'propipe-coordinator',
  workers: 'propipe-worker',
  /** Headless Service of the workers: pod i is propipe-worker-i.propipe-workers.<namespace>.svc. */
  workersService: 'propipe-workers',
  runConfig: 'propipe-run',
  data: 'propipe-data',
  tlsSecret: 'propipe-tls',
  /** Bearer token (key `token`) and the NATS password (key `nats-password`). */
  authSecret: 'propipe-auth',
} as const;

export const PORTS = { grpc: 7070, metrics: 9090, peer: 7071, nats: 4222, natsMonitor: 8222 } as const;

export interface GpuProfile {
  device: 'cpu' | 'cuda';
  /** Default --memory-gb of a worker, also its container memory request and limit. */
  memoryGb: number;
  cpu: string;
  gpuResource?: string;
  nodeSelector?: Record<string, string>;
  tolerations?: Record<string, string>[];
}

export type GpuProfileName = 'none' | 'a10g';

export const GPU_PROFILES: Record<GpuProfileName, GpuProfile> = {
  none: { device: 'cpu', memoryGb: 4, cpu: '1' },
  // One 24 GB A10G per worker (AWS g5): GPU feature discovery labels the product; GPU nodes are
  // usually tainted nvidia.com/gpu so that only pods that ask for a GPU land there.
  a10g: {
    device: 'cuda',
    memoryGb: 22,
    cpu: '4',
    gpuResource: 'nvidia.com/gpu',
    nodeSelector: { 'nvidia.com/gpu.product': 'NVIDIA-A10G' },
    tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }],
  },
};

/** Names the job's certificate must carry (SANs), for workers dialling the coordinator and each other. */
export function serviceNames(namespace: string): string[] {
  return [`${NAMES.coordinator}.${namespace}.svc`, `*.${NAMES.workersService}.${namespace}.svc`];
}
