// What the kubelet does with a pod template, done for a process on this machine: env from values,
// the downward API and Secrets; $(VAR) expanded in command and args; ConfigMap and Secret volumes
// written as files and PersistentVolumeClaims mapped to directories, with the paths in the arguments
// moved to where those files are. The `propipe` command is this clone's entry script (the image's).
import fs from 'node:fs';
import path from 'node:path';
import type { K8sObject } from '../../deploy/render/manifests.ts';

type Obj = Record<string, any>;

export interface PodIdentity {
  podIP: string;
  namespace: string;
  annotations: Record<string, string>;
}

export interface PodProcess {
  argv: string[];
  env: Record<string, string>;
}

export interface PodHost {
  /** Every object of the job, Secrets included. */
  objects: readonly K8sObject[];
  /** Host directory of each PersistentVolumeClaim. */
  claims: Record<string, string>;
  /** Where the files of this pod's ConfigMap, Secret and emptyDir volumes go. */
  dir: string;
  /** Executables of the image, by name, as argv prefixes. */
  commands: Record<string, string[]>;
}

function find(objects: readonly K8sObject[], kind: string, name: string): Obj {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`${kind} ${name} does not exist: the pod could not start`);
  return o;
}

function fieldRef(fieldPath: string, id: PodIdentity): string {
  if (fieldPath === 'status.podIP') return id.podIP;
  if (fieldPath === 'metadata.namespace') return id.namespace;
  const a = /^metadata\.annotations\['(.+)'\]$/.exec(fieldPath);
  if (a && a[1] in id.annotations) return id.annotations[a[1]];
  throw new Error(`downward API field ${fieldPath} is not known to this rehearsal`);
}

function envValue(e: Obj, objects: readonly K8sObject[], id: PodIdentity): string {
  if (e.value !== undefined) return e.value;
  if (e.valueFrom?.fieldRef) return fieldRef(e.valueFrom.fieldRef.fieldPath, id);
  const ref = e.valueFrom?.secretKeyRef;
  if (ref) return Buffer.from(find(objects, 'Secret', ref.name).data[ref.key], 'base64').toString('utf8');
  throw new Error(`env ${e.name}: unsupported source`);
}

/** Writes a volume's files; returns the host directory that stands for its mount. */
function materialize(v: Obj, host: PodHost): string {
  if (v.persistentVolumeClaim) return host.claims[v.persistentVolumeClaim.claimName];
  const dir = path.join(host.dir, v.name);
  fs.mkdirSync(dir, { recursive: true });
  const src = v.configMap ? { obj: find(host.objects, 'ConfigMap', v.configMap.name), items: v.configMap.items, secret: false } : v.secret ? { obj: find(host.objects, 'Secret', v.secret.secretName), items: v.secret.items, secret: true } : null;
  if (!src) return dir; // emptyDir
  const data: Record<string, string> = src.obj.data;
  const items: { key: string; path: string }[] = src.items ?? Object.keys(data).map((k) => ({ key: k, path: k }));
  for (const it of items) fs.writeFileSync(path.join(dir, it.path), src.secret ? Buffer.from(data[it.key], 'base64') : data[it.key], { mode: 0o600 });
  return dir;
}

/** The process a pod template's first container becomes. */
export function podProcess(template: Obj, id: PodIdentity, host: PodHost): PodProcess {
  const c = template.spec.containers[0];
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) env[e.name] = envValue(e, host.objects, id);
  // The kubelet's rule: $(VAR) of a defined variable is replaced, anything else left as written.
  const expand = (w: string) => w.replace(/\$\((\w+)\)/g, (m, name: string) => env[name] ?? m);
  const volumes = new Map<string, string>((template.spec.volumes ?? []).map((v: Obj) => [v.name, materialize(v, host)]));
  const mounts = ((c.volumeMounts ?? []) as Obj[]).map((m) => ({ at: m.mountPath as string, dir: volumes.get(m.name)! })).sort((a, b) => b.at.length - a.at.length);
  const relocate = (w: string) => {
    const m = mounts.find((mm) => w === mm.at || w.startsWith(mm.at + '/'));
    return m ? m.dir + w.slice(m.at.length) : w;
  };
  const [cmd, ...rest] = [...(c.command ?? []), ...(c.args ?? [])].map(expand);
  const prefix = host.commands[cmd];
  if (!prefix) throw new Error(`the image has no command ${cmd}`);
  return { argv: [...prefix, ...rest.map(relocate)], env };
}
