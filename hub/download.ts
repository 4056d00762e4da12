// `propipe download`: a model from the Hugging Face Hub (or a mirror, HF_ENDPOINT) through the
// maintained @huggingface/hub client: the revision is pinned to its commit, only the files a run
// needs are fetched, every file is checked against the size and checksum the Hub lists, and an
// interrupted download continues from its partial file.
import fs from 'node:fs';
import path from 'node:path';
import { downloadFile, HubApiError, listFiles, modelInfo, type ListFileEntry } from '@huggingface/hub';
import { childLog } from '../common/log.ts';
import { writeJsonAtomic } from '../common/atomic-file.ts';
import { hashPrefix, newHash, verifyFile, type Expected } from './hash.ts';
import { selectFiles } from './select.ts';

const log = childLog({ component: 'download' });
const PARTIAL_DIR = '.propipe-download';
export const DOWNLOAD_MANIFEST = 'download.json';
const ATTEMPTS = 3;

export interface DownloadOptions {
  repo: string;
  revision?: string;
  out: string;
  include?: string[];
  /** Hub or mirror URL (HF_ENDPOINT); https://huggingface.co by default. */
  hubUrl?: string;
  /** HF_TOKEN, for gated and private repositories. */
  token?: string;
}

export interface DownloadedFile {
  path: string;
  size: number;
  algo: Expected['algo'];
  digest: string;
  /** fetched: downloaded now (resumed: from a partial file); kept: already present and verified. */
  status: 'fetched' | 'resumed' | 'kept';
}

export interface DownloadResult {
  repo: string;
  revision: string;
  commit: string;
  dir: string;
  files: DownloadedFile[];
  bytesFetched: number;
}

export class DownloadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DownloadError';
  }
}

function expectedOf(e: ListFileEntry): Expected {
  if (e.lfs) return { size: e.lfs.size, algo: 'sha256', digest: e.lfs.oid };
  if (!e.oid) throw new DownloadError(`the Hub listed ${e.path} without a checksum; cannot verify it`);
  return { size: e.size, algo: 'git-sha1', digest: e.oid };
}

/** Hub errors as what the user should do about them. */
function explain(err: unknown, o: DownloadOptions, what: string): Error {
  if (!(err instanceof HubApiError)) return err as Error;
  const where = `${o.repo}${o.revision ? `@${o.revision}` : ''} on ${o.hubUrl ?? 'https://huggingface.co'}`;
  if (err.statusCode === 401 || err.statusCode === 403) {
    return new DownloadError(`${what}: ${where} refused access (HTTP ${err.statusCode}). For a gated or private model, accept its license on the Hub and set HF_TOKEN to a token that may read it${o.token ? ' (HF_TOKEN is set: check it has access)' : ''}.`);
  }
  if (err.statusCode === 404) return new DownloadError(`${what}: ${where} was not found (HTTP 404). Check the repository name and --revision; a private repository also needs HF_TOKEN.`);
  return new DownloadError(`${what}: ${where} answered HTTP ${err.statusCode}: ${err.message}`);
}

/**
 * A fetch that refuses to append a whole file to a partial one: a Range request must be answered
 * with 206, or the resumed bytes would be wrong.
 */
const rangeCheckedFetch: typeof fetch = async (input, init) => {
  const res = await fetch(input, init);
  const range = new Headers(init?.headers).get('Range');
  if (range && !range.startsWith('bytes=0-') && res.status === 200) {
    await res.body?.cancel();
    throw new DownloadError(`the server ignored the Range request (${range}) for ${String(input)}; delete the ${PARTIAL_DIR} directory to download from the start`);
  }
  return res;
};

async function fetchOne(o: DownloadOptions, commit: string, file: string, e: Expected, partial: string): Promise<'fetched' | 'resumed'> {
  fs.mkdirSync(path.dirname(partial), { recursive: true });
  let have = fs.existsSync(partial) ? fs.statSync(partial).size : 0;
  if (have > e.size) {
    fs.rmSync(partial);
    have = 0;
  }
  const resumed = have > 0;
  const hash = newHash(e);
  await hashPrefix(partial, have, hash);
  if (have < e.size) {
    const blob = await downloadFile({ repo: o.repo, path: file, revision: commit, hubUrl: o.hubUrl, accessToken: o.token, fetch: rangeCheckedFetch });
    if (!blob) throw new DownloadError(`${file} is listed at ${commit} but the Hub has no such file`);
    if (blob.size !== e.size) throw new DownloadError(`${file}: the Hub serves ${blob.size} bytes but lists ${e.size}`);
    if (resumed) log.info({ file, from: have, size: e.size }, 'resuming a partial download');
    const sink = fs.createWriteStream(partial, { flags: 'a' });
    try {
      for await (const chunk of blob.slice(have).stream() as unknown as AsyncIterable<Uint8Array>) {
        hash.update(chunk);
        have += chunk.length;
        if (!sink.write(chunk)) await new Promise<void>((r) => sink.once('drain', () => r()));
      }
    } finally {
      await new Promise<void>((resolve, reject) => sink.end((err?: Error | null) => (err ? reject(err) : resolve())));
    }
  }
  const digest = hash.digest('hex');
  if (have !== e.size || digest !== e.digest) {
    fs.rmSync(partial, { force: true });
    throw new DownloadError(`${file} does not match the Hub's listing (${have} bytes, ${e.algo} ${digest}; expected ${e.size} bytes, ${e.digest}); the partial file was removed: run the command again`);
  }
  return resumed ? 'resumed' : 'fetched';
}

export async function downloadModel(o: DownloadOptions): Promise<DownloadResult> {
  const revision = o.revision ?? 'main';
  let commit: string;
  try {
    commit = (await modelInfo({ name: o.repo, revision, hubUrl: o.hubUrl, accessToken: o.token, additionalFields: ['sha'] })).sha;
  } catch (err) {
    throw explain(err, o, 'model info');
  }
  const entries: ListFileEntry[] = [];
  try {
    for await (const e of listFiles({ repo: o.repo, revision: commit, recursive: true, hubUrl: o.hubUrl, accessToken: o.token })) if (e.type === 'file') entries.push(e);
  } catch (err) {
    throw explain(err, o, 'file listing');
  }
  const byPath = new Map(entries.map((e) => [e.path, e]));
  const wanted = selectFiles([...byPath.keys()], o.include);
  if (wanted.length === 0) throw new DownloadError(`no file of ${o.repo}@${revision} matches ${o.include?.length ? o.include.join(' ') : 'what a run needs'}; its files: ${[...byPath.keys()].slice(0, 20).join(', ')}`);
  if (!o.include?.length && !wanted.some((p) => p.endsWith('.safetensors'))) {
    throw new DownloadError(`${o.repo}@${revision} has no .safetensors weights (propipe reads safetensors only); pick a repository or revision that has them, or --include the files you want`);
  }
  log.info({ repo: o.repo, revision, commit, files: wanted.length, out: o.out }, 'downloading');

  const files: DownloadedFile[] = [];
  let bytesFetched = 0;
  for (const file of wanted) {
    const e = expectedOf(byPath.get(file)!);
    const dest = path.join(o.out, file);
    let status: DownloadedFile['status'] = 'kept';
    if (!(await verifyFile(dest, e))) {
      const partial = path.join(o.out, PARTIAL_DIR, `${file}.part`);
      const before = fs.existsSync(partial) ? fs.statSync(partial).size : 0;
      for (let attempt = 1; ; attempt++) {
        try {
          status = await fetchOne(o, commit, file, e, partial);
          break;
        } catch (err) {
          // A dropped connection leaves a partial file the next attempt continues; a bad checksum or
          // a refusal does not get better by trying again.
          if (err instanceof DownloadError || err instanceof HubApiError || attempt >= ATTEMPTS) throw explain(err, o, file);
          log.warn({ file, attempt, err: (err as Error).message }, 'transfer interrupted; continuing from the partial file');
        }
      }
      bytesFetched += e.size - Math.min(before, e.size);
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.renameSync(partial, dest);
    }
    log.info({ file, size: e.size, status }, `${file}: ${status}, ${e.algo} verified`);
    files.push({ path: file, size: e.size, algo: e.algo, digest: e.digest, status });
  }
  fs.rmSync(path.join(o.out, PARTIAL_DIR), { recursive: true, force: true });
  const result: DownloadResult = { repo: o.repo, revision, commit, dir: o.out, files, bytesFetched };
  writeJsonAtomic(path.join(o.out, DOWNLOAD_MANIFEST), result);
  return result;
}
