// Checks the wiring that API schemas cannot see: every Secret, ConfigMap, volume, Service and port a
// pod names exists; every $(VAR) in a command has its variable; every file a flag points at is
// mounted; the coordinator waits for as many workers as the Job runs; images are pinned.
import type { K8sObject } from './manifests.ts';
import { NAMES } from './names.ts';

// Manifests are checked as plain parsed YAML (also what `kubectl kustomize` prints), hence loose types.
type Obj = Record<string, any>;

export interface PodTemplate {
  owner: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  spec: Obj;
}

/** Pod templates of Deployments and Jobs, with the owner's kind/name for messages. */
export function podTemplates(objects: readonly K8sObject[]): PodTemplate[] {
  const out: PodTemplate[] = [];
  for (const o of objects) {
    const t = (o.kind === 'Deployment' || o.kind === 'Job' ? (o.spec as Obj).template : null) as Obj | null;
    if (t) out.push({ owner: `${o.kind}/${o.metadata.name}`, labels: t.metadata?.labels ?? {}, annotations: t.metadata?.annotations ?? {}, spec: t.spec });
    for (const rj of o.kind === 'JobSet' ? ((o.spec as Obj).replicatedJobs as Obj[]) : []) {
      const p = rj.template.spec.template;
      out.push({ owner: `JobSet/${o.metadata.name}/${rj.name}`, labels: p.metadata?.labels ?? {}, annotations: p.metadata?.annotations ?? {}, spec: p.spec });
    }
  }
  return out;
}

const find = (objects: readonly K8sObject[], kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata.name === name) as Obj | undefined;
/** A headless Service of that name exists: rendered, or made by a JobSet's controller for its subdomain. */
const headless = (objects: readonly K8sObject[], name: string) => find(objects, 'Service', name)?.spec.clusterIP === 'None' || objects.some((o) => o.kind === 'JobSet' && (o.spec as Obj).network?.subdomain === name);
const selects = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);

/** Files a volume provides under its mount path, or null when any file name may exist (PVC, emptyDir). */
function volumeFiles(v: Obj, objects: readonly K8sObject[], problems: string[], where: string): string[] | null {
  const src = v.configMap ? { kind: 'ConfigMap', name: v.configMap.name, items: v.configMap.items } : v.secret ? { kind: 'Secret', name: v.secret.secretName, items: v.secret.items } : null;
  if (v.persistentVolumeClaim && !find(objects, 'PersistentVolumeClaim', v.persistentVolumeClaim.claimName)) problems.push(`${where}: volume ${v.name} names PersistentVolumeClaim ${v.persistentVolumeClaim.claimName}, which does not exist`);
  if (!src) return null;
  const target = find(objects, src.kind, src.name);
  if (!target) {
    problems.push(`${where}: volume ${v.name} names ${src.kind} ${src.name}, which does not exist`);
    return [];
  }
  const keys = Object.keys({ ...target.data, ...target.stringData });
  if (!src.items) return keys;
  for (const it of src.items) if (!keys.includes(it.key)) problems.push(`${where}: volume ${v.name} takes key ${it.key} of ${src.kind} ${src.name}, which has only ${keys.join(', ')}`);
  return src.items.map((it: Obj) => it.path);
}

function checkPod(p: PodTemplate, objects: readonly K8sObject[], problems: string[]): void {
  const volumes = new Map<string, Obj>((p.spec.volumes ?? []).map((v: Obj) => [v.name, v]));
  const containerPorts = (p.spec.containers ?? []).flatMap((c: Obj) => c.ports ?? []) as Obj[];
  for (const c of p.spec.containers ?? []) {
    const where = `${p.owner} container ${c.name}`;
    if (!/:[\w.-]+$|@sha256:/.test(c.image) || /:latest$/.test(c.image)) problems.push(`${where}: image ${c.image} is not pinned to a tag other than latest`);
    const env = new Set<string>((c.env ?? []).map((e: Obj) => e.name));
    for (const e of c.env ?? []) {
      const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
      if (!ref) continue;
      const kind = e.valueFrom.secretKeyRef ? 'Secret' : 'ConfigMap';
      const target = find(objects, kind, ref.name);
      if (!target) problems.push(`${where}: env ${e.name} names ${kind} ${ref.name}, which does not exist`);
      else if (!(ref.key in { ...target.data, ...target.stringData })) problems.push(`${where}: env ${e.name} names key ${ref.key} of ${kind} ${ref.name}, which it does not have`);
    }
    const words: string[] = [...(c.command ?? []), ...(c.args ?? [])];
    for (const w of words) for (const m of w.matchAll(/\$\((\w+)\)/g)) if (!env.has(m[1])) problems.push(`${where}: $(${m[1]}) in its arguments is not an env variable of the container (Kubernetes would pass it literally)`);
    // Every absolute file a flag points at must come from a mount that provides it.
    const mounts = (c.volumeMounts ?? []) as Obj[];
    for (const m of mounts) if (!volumes.has(m.name)) problems.push(`${where}: mounts volume ${m.name}, which the pod does not define`);
    for (const w of words.filter((x) => /^\/etc\//.test(x))) {
      const m = mounts.find((mm) => w.startsWith(mm.mountPath + '/'));
      const files = m && volumes.has(m.name) ? volumeFiles(volumes.get(m.name)!, objects, problems, where) : [];
      if (!m) problems.push(`${where}: ${w} is in no mounted volume`);
      else if (files && !files.includes(w.slice(m.mountPath.length + 1))) problems.push(`${where}: ${w} is not a key of the volume ${m.name} mounted at ${m.mountPath}`);
    }
    // Service addresses in arguments: name.$(POD_NAMESPACE).svc:port must be a Service with that port.
    for (const w of words) {
      for (const m of w.matchAll(/([a-z0-9-]+)\.\$\(POD_NAMESPACE\)\.svc(?::(\d+))?/g)) {
        const svc = find(objects, 'Service', m[1]);
        if (!svc && headless(objects, m[1])) continue;
        if (!svc) problems.push(`${where}: ${w} names Service ${m[1]}, which does not exist`);
        else if (m[2] && !svc.spec.ports.some((pp: Obj) => pp.port === Number(m[2]))) problems.push(`${where}: Service ${m[1]} has no port ${m[2]}`);
      }
    }
  }
  for (const v of volumes.values()) volumeFiles(v, objects, problems, p.owner);
  const port = p.annotations['prometheus.io/port'];
  if (p.annotations['prometheus.io/scrape'] === 'true' && !containerPorts.some((cp) => cp.containerPort === Number(port))) problems.push(`${p.owner}: prometheus.io/port ${port} is not a container port`);
  if (p.spec.subdomain) {
    if (!headless(objects, p.spec.subdomain)) problems.push(`${p.owner}: subdomain ${p.spec.subdomain} needs a headless Service of that name`);
  }
}

function checkServices(objects: readonly K8sObject[], pods: PodTemplate[], problems: string[]): void {
  for (const s of objects.filter((o) => o.kind === 'Service') as Obj[]) {
    const targets = pods.filter((p) => selects(s.spec.selector ?? {}, p.labels));
    if (!targets.length) {
      problems.push(`Service ${s.metadata.name}: its selector matches no pod`);
      continue;
    }
    for (const port of s.spec.ports) {
      const ok = targets.every((p) => p.spec.containers.some((c: Obj) => (c.ports ?? []).some((cp: Obj) => cp.name === port.targetPort || cp.containerPort === port.targetPort)));
      if (!ok) problems.push(`Service ${s.metadata.name}: targetPort ${port.targetPort} is not a port of every pod it selects`);
    }
  }
}

/** The coordinator's --workers must equal the worker Job's completions and parallelism. */
function checkWorkerCount(objects: readonly K8sObject[], problems: string[]): void {
  const jobset = objects.find((o) => o.kind === 'JobSet')?.spec as Obj | undefined;
  const job = (name: string, replicated: string) => find(objects, 'Job', name) ?? jobset?.replicatedJobs.find((rj: Obj) => rj.name === replicated)?.template;
  const coord = job(NAMES.coordinator, 'coordinator');
  const workers = job(NAMES.workers, 'worker');
  if (!coord || !workers) {
    problems.push(`the coordinator Job (${NAMES.coordinator}) or the worker Job (${NAMES.workers}) is missing`);
    return;
  }
  const args: string[] = coord.spec.template.spec.containers[0].args;
  const n = Number(args[args.indexOf('--workers') + 1]);
  if (n !== workers.spec.parallelism || n !== workers.spec.completions) problems.push(`the coordinator waits for ${n} workers, the worker Job runs parallelism ${workers.spec.parallelism}, completions ${workers.spec.completions}`);
}

/** Every problem found (empty when the manifests are wired right). `external` holds objects made elsewhere (the Secrets). */
export function checkWiring(objects: readonly K8sObject[], external: readonly K8sObject[] = []): string[] {
  const all = [...objects, ...external];
  const problems: string[] = [];
  const pods = podTemplates(all);
  for (const p of pods) checkPod(p, all, problems);
  checkServices(all, pods, problems);
  checkWorkerCount(all, problems);
  return [...new Set(problems)];
}

/** GPU resources that pods request or limit, by owner. */
export function gpuRequests(objects: readonly K8sObject[]): string[] {
  return podTemplates(objects).flatMap((p) => (p.spec.containers as Obj[]).filter((c) => Object.keys({ ...c.resources?.limits, ...c.resources?.requests }).some((k) => k.endsWith('/gpu'))).map((c) => `${p.owner}/${c.name}`));
}
