// The Kubernetes manifests, checked offline: every object of every overlay and of `propipe k8s render`
// for 1, 2, 4 and 8 workers validates against the Kubernetes API schemas (kubernetes-models), and its
// wiring holds (names, keys, ports, worker count, pinned images, GPU only where asked). The committed
// kustomize tree is what the renderer writes, and `kubectl kustomize` of each overlay equals the render
// with the overlay's options (skipped, with the reason, where kubectl is absent).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Deployment } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { ConfigMap, PersistentVolumeClaim, Secret, Service } from 'kubernetes-models/v1';
import YAML from 'yaml';
import { kustomizeTree, overlayRenderOptions, overlays } from '../deploy/render/kustomize.ts';
import type { K8sObject, RenderOptions } from '../deploy/render/manifests.ts';
import { NAMES } from '../deploy/render/names.ts';
import { readRunConfigText, renderJob } from '../deploy/render/render.ts';
import { makeJobSecrets, secretShapes } from '../deploy/render/secrets.ts';
import { checkWiring, gpuRequests } from '../deploy/render/wiring.ts';
import { propipe } from './support/cli.ts';

const K8S = path.resolve(import.meta.dirname, '../deploy/k8s');
const RUN = readRunConfigText(path.join(K8S, 'base/run.yaml'));
const MODELS: Record<string, new (o: never) => { validate(): void }> = { ConfigMap, PersistentVolumeClaim, Secret, Service, Deployment, Job };

function validate(o: K8sObject, where: string): void {
  const Model = MODELS[o.kind];
  assert.ok(Model, `${where}: no schema for kind ${o.kind}`);
  try {
    new Model(o as never).validate();
  } catch (err) {
    assert.fail(`${where}: ${o.kind}/${o.metadata.name} is not a valid ${o.kind}: ${(err as Error).message}`);
  }
}

function checkAll(objects: K8sObject[], where: string, o: { workers: number; gpu: boolean }): void {
  for (const obj of objects) validate(obj, where);
  assert.deepEqual(checkWiring(objects, secretShapes()), [], where);
  const workers = objects.find((x) => x.kind === 'Job' && x.metadata.name === NAMES.workers)!.spec as { parallelism: number; completionMode: string };
  assert.equal(workers.parallelism, o.workers, where);
  assert.equal(workers.completionMode, 'Indexed', where);
  assert.deepEqual(gpuRequests(objects), o.gpu ? [`Job/${NAMES.workers}/worker`] : [], `${where}: GPU requests exactly on the GPU workers`);
}

const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;
const parseDocs = (text: string) => YAML.parseAllDocuments(text).map((d) => d.toJS() as K8sObject).filter(Boolean);
const byKey = (objs: K8sObject[]) => new Map(objs.map((o) => [`${o.kind}/${o.metadata.name}`, o]));

test('k8s render for 1, 2, 4 and 8 workers, CPU and A10G, validates and is wired right', () => {
  for (const workers of [1, 2, 4, 8]) {
    for (const gpu of ['none', 'a10g'] as const) {
      const o: RenderOptions = { workers, gpu, image: 'registry.example.com/propipe:0.1.0', runConfig: RUN, namespace: 'ml' };
      checkAll(renderJob(o), `render N=${workers} gpu=${gpu}`, { workers, gpu: gpu !== 'none' });
    }
  }
  // The command itself, as a user runs it.
  const r = propipe(['k8s', 'render', '--workers', '8', '--gpu', 'a10g', '--image', 'r/propipe:1', '--config', path.join(K8S, 'base/run.yaml'), '--memory-gb', '40']);
  assert.equal(r.status, 0, r.stderr);
  const objs = parseDocs(r.stdout);
  checkAll(objs, 'propipe k8s render', { workers: 8, gpu: true });
  const worker = objs.find((x) => x.metadata.name === NAMES.workers)!.spec as { template: { spec: { containers: { args: string[]; resources: { limits: Record<string, string> } }[] } } };
  const c = worker.template.spec.containers[0];
  assert.equal(c.args[c.args.indexOf('--memory-gb') + 1], '40');
  assert.equal(c.resources.limits.memory, '40Gi', 'the memory limit matches --memory-gb');
});

// No JobSet schema ships offline: its envelope is held to the JobSet v1alpha2 field names, and every
// Job template inside it validates as a batch/v1 Job.
const JOBSET_FIELDS: Record<string, string[]> = {
  spec: ['replicatedJobs', 'network', 'successPolicy', 'failurePolicy', 'startupPolicy', 'suspend', 'coordinator', 'managedBy', 'ttlSecondsAfterFinished'],
  network: ['enableDNSHostnames', 'subdomain', 'publishNotReadyAddresses'],
  failurePolicy: ['maxRestarts', 'restartStrategy', 'rules'],
  rule: ['name', 'action', 'onJobFailureReasons', 'onJobFailureMessagePatterns', 'targetReplicatedJobs'],
  replicatedJob: ['name', 'groupName', 'template', 'replicas', 'dependsOn'],
};

function validateJobSet(js: K8sObject, where: string): { workers: number } {
  const spec = js.spec as any;
  const only = (o: object, kind: string) => assert.deepEqual(Object.keys(o).filter((k) => !JOBSET_FIELDS[kind].includes(k)), [], `${where}: unknown ${kind} field`);
  only(spec, 'spec');
  only(spec.network, 'network');
  only(spec.failurePolicy, 'failurePolicy');
  for (const r of spec.failurePolicy.rules) {
    only(r, 'rule');
    assert.match(r.name, /^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/);
    assert.ok(['FailJobSet', 'RestartJobSet', 'RestartJobSetAndIgnoreMaxRestarts', 'RestartJob', 'RestartJobAndIgnoreMaxRestarts'].includes(r.action));
  }
  for (const rj of spec.replicatedJobs) {
    only(rj, 'replicatedJob');
    validate({ apiVersion: 'batch/v1', kind: 'Job', metadata: { name: `${js.metadata.name}-${rj.name}-0` }, spec: rj.template.spec }, `${where} replicated job ${rj.name}`);
  }
  return { workers: spec.replicatedJobs.find((rj: any) => rj.name === 'worker').template.spec.parallelism };
}

test('k8s render --jobset: one JobSet with the same pods, Job templates valid, wiring right', () => {
  for (const workers of [1, 2, 4, 8]) {
    for (const gpu of ['none', 'a10g'] as const) {
      const where = `jobset N=${workers} gpu=${gpu}`;
      const objs = renderJob({ workers, gpu, image: 'registry.example.com/propipe:0.1.0', runConfig: RUN, namespace: 'ml', jobset: true });
      for (const o of objs.filter((x) => x.kind !== 'JobSet')) validate(o, where);
      assert.equal(validateJobSet(objs.find((x) => x.kind === 'JobSet')!, where).workers, workers);
      assert.deepEqual(checkWiring(objs, secretShapes()), [], where);
      assert.deepEqual(gpuRequests(objs), gpu === 'a10g' ? ['JobSet/propipe/worker/worker'] : [], where);
    }
  }
});

test('the wiring checks catch a missing Secret key, a wrong worker count, an unpinned image and an undefined $(VAR)', () => {
  const fresh = () => structuredClone(renderJob({ workers: 2, gpu: 'none', image: 'r/propipe:1', runConfig: RUN }));
  const job = (objs: K8sObject[], name: string) => objs.find((o) => o.kind === 'Job' && o.metadata.name === name)!.spec as any;
  const cases: [string, (objs: K8sObject[]) => void, RegExp][] = [
    ['secret key', (objs) => (job(objs, NAMES.coordinator).template.spec.containers[0].env[1].valueFrom.secretKeyRef.key = 'nats-pass'), /key nats-pass of Secret propipe-auth/],
    ['worker count', (objs) => (job(objs, NAMES.workers).parallelism = 3), /waits for 2 workers, the worker Job runs parallelism 3/],
    ['latest', (objs) => (job(objs, NAMES.workers).template.spec.containers[0].image = 'r/propipe:latest'), /not pinned/],
    ['env', (objs) => job(objs, NAMES.workers).template.spec.containers[0].env.splice(0, 1), /\$\(POD_IP\) in its arguments is not an env variable/],
    ['service port', (objs) => (objs.find((o) => o.kind === 'Service' && o.metadata.name === NAMES.coordinator)!.spec as any).ports.splice(0, 1), /Service propipe-coordinator has no port 7070/],
    ['mount', (objs) => job(objs, NAMES.coordinator).template.spec.volumes.splice(1, 1), /mounts volume tls, which the pod does not define/],
    ['headless', (objs) => objs.splice(objs.findIndex((o) => o.metadata.name === NAMES.workersService), 1), /subdomain propipe-workers needs a headless Service/],
  ];
  for (const [what, breakIt, expected] of cases) {
    const objs = fresh();
    breakIt(objs);
    const problems = checkWiring(objs, secretShapes());
    assert.ok(problems.some((p) => expected.test(p)), `${what}: ${problems.join('; ') || 'no problem found'}`);
  }
  assert.ok(checkWiring(fresh()).some((p) => /names Secret propipe-tls, which does not exist/.test(p)), 'without the Secrets, their absence is reported');
});

test('the committed kustomize tree is what the renderer writes; kubectl kustomize of each overlay equals k8s render', (t) => {
  for (const [rel, text] of kustomizeTree(RUN)) assert.equal(fs.readFileSync(path.join(K8S, rel), 'utf8'), text, `deploy/k8s/${rel} is stale: run propipe k8s kustomize --out deploy/k8s`);
  if (!kubectl) return t.skip('kubectl is not installed: the kustomize build of the overlays is not checked here (install kubectl to check it)');
  for (const [name, ov] of Object.entries(overlays())) {
    const r = spawnSync('kubectl', ['kustomize', path.join(K8S, 'overlays', name)], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const built = parseDocs(r.stdout);
    checkAll(built, `overlay ${name}`, { workers: ov.workers, gpu: ov.gpu !== 'none' });
    const rendered = byKey(renderJob(overlayRenderOptions(ov, RUN)));
    assert.deepEqual([...byKey(built).keys()].sort(), [...rendered.keys()].sort(), `overlay ${name}: same objects`);
    for (const [k, o] of byKey(built)) assert.deepEqual(o, rendered.get(k), `overlay ${name}: ${k} differs from k8s render`);
  }
});

test('k8s secrets makes valid Secrets whose certificate names the coordinator and every worker', () => {
  const secrets = makeJobSecrets({ namespace: 'ml', days: 30 });
  for (const s of secrets) validate(s, 'k8s secrets');
  assert.deepEqual(secrets.map((s) => Object.keys(s.data as object)), secretShapes().map((s) => Object.keys(s.data as object)));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-sec-'));
  const cert = path.join(dir, 'tls.crt');
  fs.writeFileSync(cert, Buffer.from((secrets[0].data as Record<string, string>)['tls.crt'], 'base64'));
  const text = spawnSync('openssl', ['x509', '-in', cert, '-noout', '-ext', 'subjectAltName'], { encoding: 'utf8' }).stdout;
  fs.rmSync(dir, { recursive: true });
  assert.match(text, /DNS:propipe-coordinator\.ml\.svc/);
  assert.match(text, /DNS:\*\.propipe-workers\.ml\.svc/);
  assert.ok(Buffer.from((secrets[1].data as Record<string, string>).token, 'base64').length >= 32, 'a long random token');
});
