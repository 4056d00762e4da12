// Checksums the Hub publishes for every file: SHA-256 of the content for LFS files (the LFS oid), and
// the git blob id (SHA-1 of "blob <size>\0" + content) for files kept in git itself.
import crypto from 'node:crypto';
import fs from 'node:fs';

export interface Expected {
  size: number;
  /** 'sha256' for LFS files, 'git-sha1' for the rest. */
  algo: 'sha256' | 'git-sha1';
  digest: string;
}

export function newHash(e: Expected): crypto.Hash {
  if (e.algo === 'sha256') return crypto.createHash('sha256');
  return crypto.createHash('sha1').update(`blob ${e.size}\0`);
}

/** Feeds the first `bytes` of `file` into `hash`, streaming (shards are gigabytes). */
export async function hashPrefix(file: string, bytes: number, hash: crypto.Hash): Promise<void> {
  if (bytes === 0) return;
  for await (const chunk of fs.createReadStream(file, { start: 0, end: bytes - 1 })) hash.update(chunk as Buffer);
}

/** Whether `file` has the expected size and checksum. */
export async function verifyFile(file: string, e: Expected): Promise<boolean> {
  let size: number;
  try {
    size = fs.statSync(file).size;
  } catch {
    return false;
  }
  if (size !== e.size) return false;
  const h = newHash(e);
  await hashPrefix(file, size, h);
  return h.digest('hex') === e.digest;
}
