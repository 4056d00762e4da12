// The kustomize tree in deploy/k8s, written from renderManifests: the base is the render of the CPU
// profile with 2 workers; each overlay sets namespace and image and patches the base with exactly the
// differences between the base and the render of its own profile. `propipe k8s kustomize --out
// deploy/k8s` rewrites it; a test checks that the committed tree is what it writes and that
// `kubectl kustomize` of each overlay equals `propipe k8s render` with the overlay's options.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { packageVersion } from '../../common/package-root.ts';
import { jsonDiff } from './json-patch.ts';
import { renderManifests, type K8sObject, type RenderOptions } from './manifests.ts';
import { NAMES, type GpuProfileName } from './names.ts';
import { toYaml } from './render.ts';

/** Image name in the base; each overlay's `images:` entry replaces it with the registry image. */
export const BASE_IMAGE_NAME = 'propipe';
const REGISTRY_IMAGE = 'registry.example.com/propipe';

export interface Overlay {
  workers: number;
  gpu: GpuProfileName;
  imageTag: string;
  namespace: string;
}

export function overlays(): Record<string, Overlay> {
  const v = packageVersion();
  return {
    cpu: { workers: 2, gpu: 'none', imageTag: `${v}-cpu`, namespace: 'propipe' },
    a10g: { workers: 4, gpu: 'a10g', imageTag: `${v}-cuda12`, namespace: 'propipe' },
  };
}

/** The options `propipe k8s render` takes to produce what `kubectl kustomize overlays/<name>` does. */
export function overlayRenderOptions(o: Overlay, runConfig: string): RenderOptions {
  return { workers: o.workers, gpu: o.gpu, image: `${REGISTRY_IMAGE}:${o.imageTag}`, namespace: o.namespace, runConfig };
}

const FILE_OF: Record<string, string> = { data: 'storage.yaml', nats: 'nats.yaml', coordinator: 'coordinator.yaml', worker: 'workers.yaml' };
const HEADER = '# Written by `propipe k8s kustomize --out deploy/k8s` from deploy/render/: change the renderer, not this file.\n';

const key = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;

/** Every file of the tree (path relative to deploy/k8s → text), from the run config text of base/run.yaml. */
export function kustomizeTree(runConfig: string): Map<string, string> {
  const files = new Map<string, string>();
  const baseOpts: RenderOptions = { workers: 2, gpu: 'none', image: `${BASE_IMAGE_NAME}:${packageVersion()}`, runConfig };
  const base = renderManifests(baseOpts);
  const byFile = new Map<string, K8sObject[]>();
  for (const o of base) {
    if (o.kind === 'ConfigMap') continue; // made by the configMapGenerator from base/run.yaml
    const file = FILE_OF[o.metadata.labels!['app.kubernetes.io/component']];
    byFile.set(file, [...(byFile.get(file) ?? []), o]);
  }
  for (const [file, objs] of byFile) files.set(`base/${file}`, HEADER + toYaml(objs));
  const configMap = base.find((o) => o.kind === 'ConfigMap')!;
  files.set(
    'base/kustomization.yaml',
    HEADER +
      YAML.stringify({
        apiVersion: 'kustomize.config.k8s.io/v1beta1',
        kind: 'Kustomization',
        resources: [...byFile.keys()],
        configMapGenerator: [{ name: NAMES.runConfig, files: ['run.yaml'], options: { disableNameSuffixHash: true, labels: configMap.metadata.labels } }],
      }),
  );

  for (const [name, ov] of Object.entries(overlays())) {
    const target = renderManifests(overlayRenderOptions(ov, runConfig));
    // What the overlay's namespace and images transformers already do is not a patch.
    const normalized = renderManifests({ ...baseOpts, image: `${REGISTRY_IMAGE}:${ov.imageTag}`, namespace: ov.namespace });
    const patches = [];
    for (const t of target) {
      const b = normalized.find((o) => key(o) === key(t));
      if (!b) throw new Error(`overlay ${name}: ${key(t)} is not in the base; add it to the base render`);
      const ops = jsonDiff(b, t);
      if (ops.length) patches.push({ target: { kind: t.kind, name: t.metadata.name }, patch: YAML.stringify(ops, { lineWidth: 0 }) });
    }
    const kustomization = {
      apiVersion: 'kustomize.config.k8s.io/v1beta1',
      kind: 'Kustomization',
      namespace: ov.namespace,
      resources: ['../../base'],
      images: [{ name: BASE_IMAGE_NAME, newName: REGISTRY_IMAGE, newTag: ov.imageTag }],
      ...(patches.length ? { patches } : {}),
    };
    files.set(`overlays/${name}/kustomization.yaml`, HEADER + `# ${ov.workers} workers, GPU profile ${ov.gpu}; same as: propipe k8s render --workers ${ov.workers} --gpu ${ov.gpu} --namespace ${ov.namespace} --image ${REGISTRY_IMAGE}:${ov.imageTag} --config base/run.yaml\n` + YAML.stringify(kustomization, { lineWidth: 0 }));
  }
  return files;
}

export function writeKustomizeTree(dir: string): string[] {
  const runConfig = fs.readFileSync(path.join(dir, 'base/run.yaml'), 'utf8');
  const written = [];
  for (const [rel, text] of kustomizeTree(runConfig)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), text);
    written.push(rel);
  }
  return written;
}
