// A rehearsal of the Kubernetes job without a cluster: the containers of `propipe k8s render` (command,
// args, env with downward-API values and Secrets, ConfigMap and Secret files) run as processes, each
// "pod" in a network namespace of its own, names resolving as cluster DNS would (a hosts file per
// namespace; a Service name points at its one pod, whose container port the Service's port equals).
// Mutual TLS and the bearer token are on, as rendered. Mid-run one worker pod is killed (SIGKILL) and
// a replacement starts with the same environment and a new pod IP, as the Job controller would do:
// the job finishes with the weights of an uninterrupted run. Needs root (skipped otherwise).
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import type { K8sObject } from '../deploy/render/manifests.ts';
import { NAMES } from '../deploy/render/names.ts';
import { renderJob } from '../deploy/render/render.ts';
import { makeJobSecrets } from '../deploy/render/secrets.ts';
import { checkWiring, podTemplates } from '../deploy/render/wiring.ts';
import { openCheckpoint } from '../model/hf/checkpoint.ts';
import { Trainer } from '../local/trainer.ts';
import { maxRelError } from './support/compare.ts';
import { exited, inNs, NetnsLab } from './support/netns.ts';
import { podProcess, type PodHost } from './support/pod.ts';
import { makeTiny } from './support/tiny.ts';

const BIN = path.resolve(import.meta.dirname, '../bin/propipe.mjs');
const NS = 'rehearsal';
const lab = new NetnsLab(['nats', 'coord', 'w0', 'w1'], '10.232.0');
const INDEX = 'batch.kubernetes.io/job-completion-index';

type Obj = Record<string, any>;

/** Every Service must forward its port to the same container port: here a name points at the pod itself. */
function assertPortsDirect(objects: readonly K8sObject[]): void {
  for (const s of objects.filter((o) => o.kind === 'Service') as Obj[]) {
    const pod = podTemplates(objects).find((p) => Object.entries(s.spec.selector).every(([k, v]) => p.labels[k] === v))!;
    for (const port of s.spec.ports) assert.ok(pod.spec.containers[0].ports.some((cp: Obj) => cp.name === port.targetPort && cp.containerPort === port.port), `${s.metadata.name}:${port.port}`);
  }
}

test('the rendered job runs as pods in their own namespaces; a killed worker pod is replaced and the job ends with the uninterrupted weights', async (t) => {
  const skip = lab.setUp();
  if (skip) return t.skip(skip);
  const children: ChildProcess[] = [];
  try {
    const tiny = await makeTiny();
    const run = { model: tiny.model, dataset: tiny.train, train_type: 'llamapro' as const, llamapro_new_blocks: 2, stage_order: 'none', steps_per_stage: 30, save_steps: 5, learning_rate: 1e-2, per_device_train_batch_size: 4, logging_steps: 1, seed: 4 };
    const reference = await new Trainer({ ...run, output_dir: path.join(tiny.root, 'reference') }).train();
    const out = path.join(tiny.root, 'k8s');

    const manifests = renderJob({ workers: 2, gpu: 'none', image: 'registry.example.com/propipe:0.1.0', runConfig: YAML.stringify({ ...run, output_dir: out }), namespace: NS });
    const objects = [...manifests, ...makeJobSecrets({ namespace: NS, days: 1 })];
    assert.deepEqual(checkWiring(manifests, objects.filter((o) => o.kind === 'Secret')), []);
    assertPortsDirect(objects);
    const template = (kind: string, name: string) => (objects.find((o) => o.kind === kind && o.metadata.name === name)!.spec as Obj).template;
    const host = (pod: string): PodHost => ({ objects, claims: { [NAMES.data]: tiny.root }, dir: path.join(tiny.root, 'pods', pod), commands: { propipe: [process.execPath, BIN], 'nats-server': ['nats-server'] } });

    const [nats, coord, w0, w1] = lab.hosts;
    const dns = () => ({
      [`${NAMES.nats}.${NS}.svc`]: nats.ip,
      [`${NAMES.coordinator}.${NS}.svc`]: coord.ip,
      [`${NAMES.workers}-0.${NAMES.workersService}.${NS}.svc`]: w0.ip,
      [`${NAMES.workers}-1.${NAMES.workersService}.${NS}.svc`]: w1.ip,
    });
    lab.writeHosts(dns());
    const lines: string[] = [];
    const start = (kind: string, name: string, pod: string, ns: { ns: string; ip: string }, annotations: Record<string, string> = {}) => {
      const p = podProcess(template(kind, name), { podIP: ns.ip, namespace: NS, annotations }, host(pod));
      const child = inNs(ns.ns, p.argv, lines, pod, { PATH: process.env.PATH, PROPIPE_LOG_LEVEL: 'info', ...p.env });
      children.push(child);
      return child;
    };
    start('Deployment', NAMES.nats, 'nats', nats);
    const coordinator = start('Job', NAMES.coordinator, 'coord', coord);
    const workers = [w0, w1].map((h, i) => start('Job', NAMES.workers, `w${i}`, h, { [INDEX]: String(i) }));

    // Kill pod propipe-worker-1 once training is under way; its replacement gets a new IP, same name.
    let killedMidRun = false;
    const replaced = new Promise<ChildProcess>((resolve) => {
      const poll = setInterval(async () => {
        if (!lines.some((l) => l.startsWith('coord ') && l.includes('"msg":"train"') && l.includes('"step":8,'))) return;
        clearInterval(poll);
        killedMidRun = workers[1].exitCode === null && coordinator.exitCode === null;
        workers[1].kill('SIGKILL');
        await exited(workers[1]);
        lab.readdress(3, '10.232.0.99');
        lab.writeHosts(dns());
        resolve(start('Job', NAMES.workers, 'w1-replacement', w1, { [INDEX]: '1' }));
      }, 20);
    });
    // Prometheus's view, from another pod, while the job waits for the replacement.
    const scraped = replaced.then(() => {
      const lines2: string[] = [];
      const curl = inNs(nats.ns, [process.execPath, '-e', `fetch('http://${NAMES.coordinator}.${NS}.svc:9090/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`], lines2, 'scrape', { PATH: process.env.PATH });
      return exited(curl).then(() => lines2.join('\n'));
    });
    let guard: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited(coordinator), new Promise<number>((r) => (guard = setTimeout(() => r(-1), 240_000)))]);
    clearTimeout(guard);
    const replacement = await replaced;
    assert.equal(code, 0, lines.filter((l) => !l.includes('"msg":"train"')).slice(-30).join('\n'));
    const tail = (pod: string) => lines.filter((l) => l.startsWith(`${pod} `) && !l.includes('"msg":"train"')).slice(-12).join('\n');
    assert.deepEqual(await Promise.all([exited(workers[0]), exited(replacement)]), [0, 0], `the worker pods complete\n${tail('w0')}\n${tail('w1-replacement')}`);

    assert.ok(killedMidRun, 'the worker pod was killed while the job ran');
    assert.match(await scraped, /^scrape propipe_loss /m, 'metrics are served on the coordinator Service');
    const failover = lines.filter((l) => l.includes('a rank failed: re-assigning'));
    assert.ok(failover.length >= 1, 'the job failed over');
    t.diagnostic(`fail-over: ${JSON.parse(failover[0].slice(failover[0].indexOf('{'))).reason}`);
    assert.ok(lines.some((l) => l.startsWith('coord ') && l.includes('"worker":"propipe-worker-1"') && l.includes('worker registered')), 'the replacement registered under its stable name');
    const partition = lines.filter((l) => l.startsWith('coord ') && l.includes('partition planned')).map((l) => JSON.parse(l.slice(l.indexOf('{'))).partition as { rank: number; worker: string }[]);
    for (const p of partition) assert.deepEqual(p.map((r) => r.worker), [`${NAMES.workers}-0`, `${NAMES.workers}-1`], 'rank i is pod i (JOB_COMPLETION_INDEX), whatever the registration order');
    assert.ok(lines.some((l) => l.startsWith('w1-replacement ') && l.includes(`${NAMES.workers}-1.${NAMES.workersService}.${NS}.svc`)), 'the replacement advertised its DNS name');

    const ca = openCheckpoint(reference.finalDir);
    const cb = openCheckpoint(path.join(out, 'final'));
    for (const n of ca.names()) assert.ok(maxRelError(cb.readF32(n), ca.readF32(n)) <= 1e-5, n);
    assert.ok(fs.existsSync(path.join(out, 'final')));
  } finally {
    children.forEach((ch) => ch.exitCode === null && ch.kill('SIGKILL'));
    lab.tearDown();
  }
});
