import fs from 'node:fs';
import path from 'node:path';
import { writeKustomizeTree } from '../../deploy/render/kustomize.ts';
import { GPU_PROFILES, type GpuProfileName } from '../../deploy/render/names.ts';
import { readRunConfigText, renderJob, toYaml } from '../../deploy/render/render.ts';
import { makeJobSecrets } from '../../deploy/render/secrets.ts';
import { log } from '../../common/log.ts';
import { UsageError, type Flags } from '../args.ts';
import type { Command } from '../command.ts';

function write(f: Flags, text: string, mode = 0o644): void {
  const out = f.str('out');
  if (!out) return void process.stdout.write(text);
  fs.writeFileSync(out, text, { mode });
  log.info({ out }, 'written');
}

const ACTIONS: Record<string, (f: Flags) => void> = {
  render(f) {
    const gpu = f.str('gpu') ?? 'none';
    if (!(gpu in GPU_PROFILES)) throw new UsageError(`--gpu must be one of ${Object.keys(GPU_PROFILES).join(', ')}, got '${gpu}'`);
    const objects = renderJob({
      workers: f.int('workers'),
      image: f.required('image'),
      runConfig: readRunConfigText(f.required('config')),
      gpu: gpu as GpuProfileName,
      namespace: f.str('namespace'),
      memoryGb: f.has('memory-gb') ? f.num('memory-gb') : undefined,
      storage: f.str('storage'),
      storageClass: f.str('storage-class'),
      jobset: f.bool('jobset'),
    });
    write(f, toYaml(objects));
  },
  secrets(f) {
    write(f, toYaml(makeJobSecrets({ namespace: f.required('namespace'), days: f.int('days', 90) })), 0o600);
  },
  kustomize(f) {
    const dir = f.str('out') ?? 'deploy/k8s';
    if (!fs.existsSync(path.join(dir, 'base/run.yaml'))) throw new UsageError(`${dir}/base/run.yaml is missing: the tree is written around the run config there`);
    log.info({ files: writeKustomizeTree(dir) }, 'kustomize tree written');
  },
};

export const k8sCommand: Command = {
  name: 'k8s',
  summary: 'Kubernetes: render the manifests of a job for N workers, make its Secrets, rewrite deploy/k8s',
  usage: [
    'propipe k8s render --workers N --image IMAGE:TAG --config run.yaml [--gpu none|a10g] [--namespace NS] [--memory-gb G] [--jobset] [--out FILE]',
    '       propipe k8s secrets --namespace NS [--days D] [--out FILE]      (apply with kubectl apply -f; do not commit)',
    '       propipe k8s kustomize [--out deploy/k8s]                        (rewrites the kustomize base and overlays)',
  ].join('\n'),
  flags: {
    workers: { type: 'string', description: 'number of workers (one per GPU)' },
    image: { type: 'string', description: 'image of the coordinator and workers, with a pinned tag' },
    config: { type: 'string', description: 'YAML run file (becomes a ConfigMap; paths are on the shared volume, /data)' },
    gpu: { type: 'string', description: 'GPU profile: none (CPU workers) or a10g (one 24 GB A10G per worker)', default: 'none' },
    namespace: { type: 'string', description: 'namespace of every object (and of the certificate names, for secrets)' },
    'memory-gb': { type: 'string', description: 'memory of one worker: its --memory-gb and its container memory limit' },
    storage: { type: 'string', description: 'size of the ReadWriteMany volume for model, data and output_dir', default: '200Gi' },
    'storage-class': { type: 'string', description: 'storage class of that volume (one that offers ReadWriteMany: EFS, Filestore, CephFS, NFS)' },
    jobset: { type: 'boolean', description: 'optional: one JobSet (coordinator and workers as replicated jobs, gang restart) instead of two Jobs; needs the JobSet controller' },
    days: { type: 'string', description: 'certificate lifetime in days (secrets)', default: '90' },
    out: { type: 'string', description: 'output file (render, secrets; default stdout) or directory (kustomize)' },
  },
  async run(f) {
    const action = f.positionals[0];
    if (!action || !(action in ACTIONS)) throw new UsageError(`say what to do: propipe k8s ${Object.keys(ACTIONS).join('|')} (got '${action ?? ''}')`);
    ACTIONS[action](f);
  },
};
