// Where the `propipe` entry script is, both in a clone (sources beside package.json) and in an
// installed package (compiled sources one level down, in dist/): processes that start other propipe
// processes (`launch`, `demo`) need it.
import fs from 'node:fs';
import path from 'node:path';

function packageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}: is propipe installed completely?`);
  }
}

export const PROPIPE_BIN = path.join(packageRoot(import.meta.dirname), 'bin', 'propipe.mjs');

/** The version in propipe's package.json (image tags default to it). */
export function packageVersion(): string {
  return (JSON.parse(fs.readFileSync(path.join(path.dirname(path.dirname(PROPIPE_BIN)), 'package.json'), 'utf8')) as { version: string }).version;
}
