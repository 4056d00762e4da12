// Optional: the same job as one JobSet (https://jobset.sigs.k8s.io), for clusters that run the JobSet
// controller. The coordinator and the workers become replicated jobs of one gang: when a job of the
// set fails for good, the whole set is recreated (the coordinator resumes from the last checkpoint);
// a job that failed on purpose (exit code 3: aborted) fails the set at once. The JobSet controller
// makes the headless Service (network.subdomain), so the worker Service of the plain render goes.
import { coordinatorJobSpec, meta, renderManifests, workerJobSpec, type K8sObject, type RenderOptions } from './manifests.ts';
import { NAMES } from './names.ts';

export const JOBSET_NAME = 'propipe';

export function renderJobSet(o: RenderOptions): K8sObject[] {
  const kept = renderManifests(o).filter((x) => x.kind !== 'Job' && x.metadata.name !== NAMES.workersService);
  const jobset: K8sObject = {
    apiVersion: 'jobset.x-k8s.io/v1alpha2',
    kind: 'JobSet',
    metadata: meta(JOBSET_NAME, 'jobset', o),
    spec: {
      network: { enableDNSHostnames: true, subdomain: NAMES.workersService, publishNotReadyAddresses: true },
      failurePolicy: {
        maxRestarts: 3,
        rules: [{ name: 'aborted', action: 'FailJobSet', onJobFailureReasons: ['PodFailurePolicy'] }],
      },
      replicatedJobs: [
        { name: 'coordinator', replicas: 1, template: { spec: coordinatorJobSpec(o) } },
        // Job <jobset>-worker-0; its pod i has the hostname propipe-worker-0-i.
        { name: 'worker', replicas: 1, template: { spec: workerJobSpec(o, `${JOBSET_NAME}-worker-0`) } },
      ],
    },
  };
  return [...kept, jobset];
}
