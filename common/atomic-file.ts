// Files written whole or not at all: a temp file in the same directory, fsynced, renamed over the target.
import fs from 'node:fs';
import path from 'node:path';

/** fs.writeSync moves at most 2 GiB - 1 per call. */
const IO_CHUNK = 1 << 30;

export function writeFully(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) {
    done += fs.writeSync(fd, bytes, done, Math.min(IO_CHUNK, bytes.length - done));
  }
}

function removeQuietly(file: string): void {
  try {
    fs.rmSync(file, { force: true });
  } catch {
    // Leaving a stray temp file beats masking the error that got us here.
  }
}


/** A JSON document written atomically (pretty, newline-terminated): configs, sidecars, manifests. */
export function writeJsonAtomic(target: string, value: unknown): void {
  const bytes = Buffer.from(JSON.stringify(value, null, 2) + '\n', 'utf8');
  writeFileAtomic(target, (fd) => writeFully(fd, bytes));
}

/**
 * Writes `target` through a temp file in the same directory, fsyncs it and renames it over the
 * target, so a crash or a failed write leaves either the old file or the new one — never a torn one.
 */
export function writeFileAtomic(target: string, write: (fd: number) => void): void {
  const tmp = `${target}.tmp-${process.pid}`;
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'w');
  } catch (err) {
    throw new Error(`${target}: cannot create ${path.basename(tmp)} (${(err as NodeJS.ErrnoException).code ?? String(err)}); is the directory writable?`, { cause: err });
  }
  try {
    write(fd);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    removeQuietly(tmp);
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${target}: write failed, previous file left unchanged: ${code ? `${code} ` : ''}${(err as Error).message}`, { cause: err });
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, target);
  } catch (err) {
    removeQuietly(tmp);
    throw new Error(`${target}: rename from ${path.basename(tmp)} failed (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
  // The rename is durable only once the directory entry is flushed; not every platform allows it.
  try {
    const dfd = fs.openSync(path.dirname(target), 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {
    /* best effort */
  }
}

