// `propipe k8s render` as a function: the run config is checked against the schema before it goes
// into a ConfigMap, and the manifests against their own wiring before anyone applies them.
import fs from 'node:fs';
import YAML from 'yaml';
import { parseRunConfig } from '../../recipe/run-config.ts';
import { renderJobSet } from './jobset.ts';
import { renderManifests, type K8sObject, type RenderOptions } from './manifests.ts';
import { secretShapes } from './secrets.ts';
import { checkWiring } from './wiring.ts';

export function readRunConfigText(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the run config ${file}: ${(err as Error).message}`);
  }
  parseRunConfig(YAML.parse(text), file);
  return text;
}

export function renderJob(o: RenderOptions): K8sObject[] {
  const objects = o.jobset ? renderJobSet(o) : renderManifests(o);
  const problems = checkWiring(objects, secretShapes(o.namespace));
  if (problems.length) throw new Error(`the rendered manifests are miswired (a propipe bug, please report it):\n  ${problems.join('\n  ')}`);
  return objects;
}

export const toYaml = (objects: readonly unknown[]) => objects.map((o) => YAML.stringify(o, { lineWidth: 0 })).join('---\n');
