// The Kubernetes objects of one propipe job, for any worker count: NATS, the coordinator (a one-pod
// Job and its Service), the workers (an Indexed Job and a headless Service), the run config and the
// shared volume. The kustomize tree in deploy/k8s is written from these (see kustomize.ts), so the
// two cannot drift. Credentials are not here: `propipe k8s secrets` makes them (secrets.ts).
import { GPU_PROFILES, NAMES, PORTS, type GpuProfileName } from './names.ts';

export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
} & Record<string, unknown>;

export interface RenderOptions {
  workers: number;
  /** Image of the coordinator and the workers (registry/name:tag; never `latest`). */
  image: string;
  /** Text of the run config (YAML), mounted at /etc/propipe/run.yaml. */
  runConfig: string;
  gpu: GpuProfileName;
  namespace?: string;
  /** Memory of one worker in GiB: its --memory-gb and its container memory limit (default: the GPU profile's). */
  memoryGb?: number;
  /** Size of the shared ReadWriteMany volume holding the model, the data and output_dir. */
  storage?: string;
  storageClass?: string;
  /** One JobSet instead of the two Jobs (jobset.ts; needs the JobSet controller). */
  jobset?: boolean;
}

export const NATS_IMAGE = 'nats:2.10.29-alpine';
const CONFIG_DIR = '/etc/propipe';
const TLS_DIR = '/etc/propipe/tls';
const TOKEN_DIR = '/etc/propipe/auth';
export const DATA_DIR = '/data';
/** Non-root user of the images (deploy/Containerfile*). */
export const RUN_AS = 10001;

/** Mutual TLS and the bearer token, from the Secrets `propipe k8s secrets` makes. */
export const SECURITY_ARGS = ['--tls-cert', `${TLS_DIR}/tls.crt`, '--tls-key', `${TLS_DIR}/tls.key`, '--tls-ca', `${TLS_DIR}/ca.crt`, '--mtls', '--token-file', `${TOKEN_DIR}/token`];

const labels = (component: string) => ({ 'app.kubernetes.io/name': 'propipe', 'app.kubernetes.io/component': component });

export function meta(name: string, component: string, o: RenderOptions, extra: Partial<K8sObject['metadata']> = {}): K8sObject['metadata'] {
  return { name, ...(o.namespace ? { namespace: o.namespace } : {}), labels: labels(component), ...extra };
}

const fieldEnv = (name: string, fieldPath: string) => ({ name, valueFrom: { fieldRef: { fieldPath } } });
const scrape = (port: number) => ({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(port), 'prometheus.io/path': '/metrics' });

const containerSecurity = { runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } };
const podSecurity = { runAsUser: RUN_AS, runAsGroup: RUN_AS, fsGroup: RUN_AS, runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } };

/** The volumes every propipe pod mounts: run config, TLS, token, the shared data volume, a writable /tmp. */
const propipeVolumes = [
  { name: 'run-config', configMap: { name: NAMES.runConfig } },
  { name: 'tls', secret: { secretName: NAMES.tlsSecret, defaultMode: 0o440 } },
  { name: 'auth', secret: { secretName: NAMES.authSecret, items: [{ key: 'token', path: 'token' }], defaultMode: 0o440 } },
  { name: 'data', persistentVolumeClaim: { claimName: NAMES.data } },
  { name: 'tmp', emptyDir: {} },
];
const propipeMounts = [
  { name: 'run-config', mountPath: CONFIG_DIR + '/run', readOnly: true },
  { name: 'tls', mountPath: TLS_DIR, readOnly: true },
  { name: 'auth', mountPath: TOKEN_DIR, readOnly: true },
  { name: 'data', mountPath: DATA_DIR },
  { name: 'tmp', mountPath: '/tmp' },
];
export const RUN_CONFIG_PATH = `${CONFIG_DIR}/run/run.yaml`;

/**
 * A pod that fails with exit code 3 ended the job on purpose (aborted: restarting cannot help); a pod
 * evicted or preempted does not count against the retries. Everything else is retried.
 */
const failurePolicy = (container: string) => ({
  rules: [
    { action: 'FailJob', onExitCodes: { containerName: container, operator: 'In', values: [3] } },
    { action: 'Ignore', onPodConditions: [{ type: 'DisruptionTarget', status: 'True' }] },
  ],
});

function nats(o: RenderOptions): K8sObject[] {
  return [
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta(NAMES.nats, 'nats', o),
      spec: {
        replicas: 1,
        selector: { matchLabels: labels('nats') },
        template: {
          // No scrape annotations: nats-server serves JSON on its monitor port, not Prometheus text.
          metadata: { labels: labels('nats') },
          spec: {
            securityContext: podSecurity,
            containers: [
              {
                name: 'nats',
                image: NATS_IMAGE,
                command: ['nats-server'],
                args: ['--addr', '0.0.0.0', '--port', String(PORTS.nats), '--http_port', String(PORTS.natsMonitor), '--user', 'propipe', '--pass', '$(NATS_PASSWORD)'],
                env: [{ name: 'NATS_PASSWORD', valueFrom: { secretKeyRef: { name: NAMES.authSecret, key: 'nats-password' } } }],
                ports: [
                  { name: 'client', containerPort: PORTS.nats },
                  { name: 'monitor', containerPort: PORTS.natsMonitor },
                ],
                readinessProbe: { httpGet: { path: '/healthz', port: 'monitor' }, periodSeconds: 5 },
                resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } },
                securityContext: containerSecurity,
              },
            ],
          },
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(NAMES.nats, 'nats', o),
      spec: { selector: labels('nats'), ports: [{ name: 'client', port: PORTS.nats, targetPort: 'client' }] },
    },
  ];
}

/** The coordinator's Job spec: one pod, retried, never restarted after an abort (exit code 3). */
export function coordinatorJobSpec(o: RenderOptions): Record<string, unknown> {
  const args = ['coordinator', '--config', RUN_CONFIG_PATH, '--workers', String(o.workers), '--host', '0.0.0.0', '--port', String(PORTS.grpc), '--metrics-port', String(PORTS.metrics)];
  // --resume: a coordinator pod that comes back continues from the newest committed checkpoint.
  args.push('--nats', `nats://propipe:$(NATS_PASSWORD)@${NAMES.nats}.$(POD_NAMESPACE).svc:${PORTS.nats}`, '--job-id', 'propipe', '--resume', ...SECURITY_ARGS);
  return {
    completions: 1,
    parallelism: 1,
    backoffLimit: 4,
    podFailurePolicy: failurePolicy('coordinator'),
    template: {
      metadata: { labels: labels('coordinator'), annotations: scrape(PORTS.metrics) },
      spec: {
        restartPolicy: 'Never',
        securityContext: podSecurity,
        containers: [
          {
            name: 'coordinator',
            image: o.image,
            command: ['propipe'],
            args,
            env: [
              fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
              { name: 'NATS_PASSWORD', valueFrom: { secretKeyRef: { name: NAMES.authSecret, key: 'nats-password' } } },
              { name: 'PROPIPE_LOG_JSON', value: '1' },
            ],
            ports: [
              { name: 'grpc', containerPort: PORTS.grpc },
              { name: 'metrics', containerPort: PORTS.metrics },
            ],
            // The coordinator reads config.json only: a small pod.
            resources: { requests: { cpu: '500m', memory: '1Gi' }, limits: { memory: '4Gi' } },
            volumeMounts: propipeMounts,
            securityContext: containerSecurity,
          },
        ],
        volumes: propipeVolumes,
      },
    },
  };
}

function coordinator(o: RenderOptions): K8sObject[] {
  return [
    { apiVersion: 'batch/v1', kind: 'Job', metadata: meta(NAMES.coordinator, 'coordinator', o), spec: coordinatorJobSpec(o) },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(NAMES.coordinator, 'coordinator', o),
      spec: {
        selector: labels('coordinator'),
        ports: [
          { name: 'grpc', port: PORTS.grpc, targetPort: 'grpc' },
          { name: 'metrics', port: PORTS.metrics, targetPort: 'metrics' },
        ],
      },
    },
  ];
}

/**
 * The worker pod template: rank i is pod i of the Indexed Job, reachable under the headless Service
 * as `<hostPrefix>-i` (the pod hostname Kubernetes gives an Indexed Job's pods: job name and index).
 */
function workerPodTemplate(o: RenderOptions, hostPrefix: string): Record<string, unknown> {
  const gpu = GPU_PROFILES[o.gpu];
  const memoryGb = o.memoryGb ?? gpu.memoryGb;
  const name = `${hostPrefix}-$(JOB_COMPLETION_INDEX)`;
  const args = [
    'worker',
    '--coordinator', `${NAMES.coordinator}.$(POD_NAMESPACE).svc:${PORTS.grpc}`,
    '--host', '$(POD_IP)',
    '--port', String(PORTS.peer),
    // Pod hostname (job name + index) under the headless Service: stable across pod restarts, and
    // covered by the certificate's wildcard, unlike a pod IP.
    '--advertise-host', `${name}.${NAMES.workersService}.$(POD_NAMESPACE).svc`,
    '--worker-id', name,
    '--rank-hint', '$(JOB_COMPLETION_INDEX)',
    '--device', gpu.device,
    '--memory-gb', String(memoryGb),
    ...SECURITY_ARGS,
  ];
  const limits: Record<string, string> = { memory: `${memoryGb}Gi`, ...(gpu.gpuResource ? { [gpu.gpuResource]: '1' } : {}) };
  return {
    metadata: { labels: labels('worker') },
    spec: {
      restartPolicy: 'Never',
      subdomain: NAMES.workersService,
      securityContext: podSecurity,
      ...(gpu.nodeSelector ? { nodeSelector: gpu.nodeSelector } : {}),
      ...(gpu.tolerations ? { tolerations: gpu.tolerations } : {}),
      containers: [
        {
          name: 'worker',
          image: o.image,
          command: ['propipe'],
          args,
          env: [
            fieldEnv('POD_IP', 'status.podIP'),
            fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
            fieldEnv('JOB_COMPLETION_INDEX', "metadata.annotations['batch.kubernetes.io/job-completion-index']"),
            { name: 'PROPIPE_LOG_JSON', value: '1' },
          ],
          ports: [{ name: 'peer', containerPort: PORTS.peer }],
          resources: { requests: { cpu: gpu.cpu, memory: `${memoryGb}Gi`, ...(gpu.gpuResource ? { [gpu.gpuResource]: '1' } : {}) }, limits },
          volumeMounts: propipeMounts,
          securityContext: containerSecurity,
        },
      ],
      volumes: propipeVolumes,
    },
  };
}

/** The workers' Indexed Job spec; `hostPrefix` is the name of the Job that runs it. */
export function workerJobSpec(o: RenderOptions, hostPrefix: string = NAMES.workers): Record<string, unknown> {
  return {
    completionMode: 'Indexed',
    completions: o.workers,
    parallelism: o.workers,
    // A killed worker pod comes back under the same index (same name, same rank hint), registers
    // again, and the coordinator fails the job over to the last committed checkpoint.
    backoffLimit: 4 * o.workers,
    podFailurePolicy: failurePolicy('worker'),
    template: workerPodTemplate(o, hostPrefix),
  };
}

function workers(o: RenderOptions): K8sObject[] {
  return [
    { apiVersion: 'batch/v1', kind: 'Job', metadata: meta(NAMES.workers, 'worker', o), spec: workerJobSpec(o) },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(NAMES.workersService, 'worker', o),
      // Headless, and published before readiness: neighbours dial a worker as soon as it listens.
      spec: { clusterIP: 'None', publishNotReadyAddresses: true, selector: labels('worker'), ports: [{ name: 'peer', port: PORTS.peer, targetPort: 'peer' }] },
    },
  ];
}

function storage(o: RenderOptions): K8sObject[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: meta(NAMES.data, 'data', o),
      spec: {
        // Every rank writes its shard and the coordinator verifies them all: one volume, many writers.
        accessModes: ['ReadWriteMany'],
        resources: { requests: { storage: o.storage ?? '200Gi' } },
        ...(o.storageClass ? { storageClassName: o.storageClass } : {}),
      },
    },
  ];
}

export function runConfigMap(o: RenderOptions): K8sObject {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta(NAMES.runConfig, 'config', o), data: { 'run.yaml': o.runConfig } };
}

export function renderManifests(o: RenderOptions): K8sObject[] {
  if (!Number.isInteger(o.workers) || o.workers < 1) throw new Error(`--workers must be a whole number ≥ 1, got ${o.workers}`);
  if (!/[:@]/.test(o.image.split('/').pop() ?? '') || /:latest$/.test(o.image)) {
    throw new Error(`--image ${o.image}: give a pinned tag or digest (e.g. registry.example.com/propipe:0.1.0-cuda12), not 'latest' or none, so every pod runs the same build`);
  }
  return [runConfigMap(o), ...storage(o), ...nats(o), ...coordinator(o), ...workers(o)];
}
