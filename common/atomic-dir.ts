// Writes a whole directory or nothing: fill a temporary sibling, then rename it into place.
import fs from 'node:fs';
import path from 'node:path';

/** Refuses an existing non-empty target, so an export never mixes with older files. */
export function ensureEmptyTarget(outDir: string): void {
  let entries: string[];
  try {
    entries = fs.readdirSync(outDir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code === 'ENOTDIR') throw new Error(`${outDir} exists and is not a directory; choose another output path`);
    throw new Error(`${outDir}: cannot read (${code ?? String(err)})`, { cause: err });
  }
  if (entries.length > 0) throw new Error(`${outDir} is not empty (e.g. ${entries[0]}); choose a new directory`);
}

export function writeDirAtomic(outDir: string, fill: (tmp: string) => void, opts: { replace?: boolean } = {}): string {
  const out = path.resolve(outDir);
  if (!opts.replace) ensureEmptyTarget(out);
  const parent = path.dirname(out);
  const createdParent = fs.mkdirSync(parent, { recursive: true });
  const tmp = path.join(parent, `.${path.basename(out)}.tmp-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  try {
    fs.mkdirSync(tmp);
    fill(tmp);
    fs.rmSync(out, { recursive: true, force: true });
    fs.renameSync(tmp, out);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (createdParent !== undefined) fs.rmSync(createdParent, { recursive: true, force: true });
    throw err;
  }
  return out;
}
