// A stand-in for the Hugging Face Hub on 127.0.0.1 (no network here), serving the endpoints the
// @huggingface/hub client calls: model info (/api/models/R/revision/REV), the tree listing
// (/api/models/R/tree/REV) and file resolution (/R/resolve/REV/PATH, LFS files redirected to a CDN
// path, as the Hub does), with HTTP Range, a bearer token check, and faults to inject.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface HubFile {
  path: string;
  bytes: Buffer;
  lfs: boolean;
}

export interface FakeHubOptions {
  repo: string;
  commit: string;
  files: HubFile[];
  /** Required bearer token (a gated repository). */
  token?: string;
}

export interface FakeHub {
  url: string;
  /** Every request: method, path and Range header. */
  requests: { method: string; url: string; range?: string }[];
  /** Cut the connection after this many body bytes, on the next transfer of that file. */
  cutOnce: Map<string, number>;
  /** Serve these files with one byte flipped. */
  corrupt: Set<string>;
  close(): Promise<void>;
}

const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');
const gitSha1 = (b: Buffer) => crypto.createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

/** Every file of a model directory, LFS for weights as on the Hub. */
export function hubFilesOf(dir: string): HubFile[] {
  return fs.readdirSync(dir).map((f) => ({ path: f, bytes: fs.readFileSync(path.join(dir, f)), lfs: f.endsWith('.safetensors') }));
}

export async function startFakeHub(o: FakeHubOptions): Promise<FakeHub> {
  const byPath = new Map(o.files.map((f) => [f.path, f]));
  const bySha = new Map(o.files.filter((f) => f.lfs).map((f) => [sha256(f.bytes), f]));
  const hub: Omit<FakeHub, 'url' | 'close'> = { requests: [], cutOnce: new Map(), corrupt: new Set() };
  const json = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const revOk = (rev: string) => rev === 'main' || rev === o.commit;

  const serveBytes = (req: http.IncomingMessage, res: http.ServerResponse, f: HubFile, headers: Record<string, string>) => {
    let body = f.bytes;
    if (hub.corrupt.has(f.path)) {
      body = Buffer.from(body);
      body[body.length >> 1] ^= 0xff;
    }
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let status = 200;
    let start = 0;
    let end = body.length - 1;
    if (m) {
      status = 206;
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), end) : end;
      headers['Content-Range'] = `bytes ${start}-${end}/${body.length}`;
    }
    const slice = body.subarray(start, end + 1);
    res.writeHead(status, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(slice.length), 'Accept-Ranges': 'bytes', ...headers });
    const cut = hub.cutOnce.get(f.path);
    if (cut !== undefined && slice.length > 1) {
      hub.cutOnce.delete(f.path);
      res.write(slice.subarray(0, cut), () => res.destroy());
      return;
    }
    res.end(slice);
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://hub');
    hub.requests.push({ method: req.method!, url: url.pathname, range: req.headers.range });
    if (o.token && req.headers.authorization !== `Bearer ${o.token}` && !url.pathname.startsWith('/cdn/')) {
      return json(res, 401, { error: `Access to model ${o.repo} is restricted. You must have access to it and be authenticated to access it. Please log in.` });
    }
    const repo = o.repo.replace(/[.]/g, '\\.');
    let m: RegExpExecArray | null;
    if ((m = new RegExp(`^/api/models/${repo}/revision/([^/]+)$`).exec(url.pathname))) {
      if (!revOk(decodeURIComponent(m[1]))) return json(res, 404, { error: 'Invalid rev id' }, { 'X-Error-Code': 'RevisionNotFound' });
      return json(res, 200, { _id: 'fake', id: o.repo, sha: o.commit, private: false, gated: false, downloads: 0, likes: 0, pipeline_tag: 'text-generation', lastModified: new Date(0).toISOString(), siblings: o.files.map((f) => ({ rfilename: f.path })) });
    }
    if ((m = new RegExp(`^/api/models/${repo}/tree/([^/]+)$`).exec(url.pathname))) {
      if (!revOk(decodeURIComponent(m[1]))) return json(res, 404, { error: 'Invalid rev id' }, { 'X-Error-Code': 'RevisionNotFound' });
      const dirs = new Set(o.files.filter((f) => f.path.includes('/')).map((f) => f.path.split('/')[0]));
      return json(res, 200, [
        ...[...dirs].map((d) => ({ type: 'directory', oid: gitSha1(Buffer.from(d)), size: 0, path: d })),
        ...o.files.map((f) =>
          f.lfs
            ? { type: 'file', oid: gitSha1(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(f.bytes)}\nsize ${f.bytes.length}\n`)), size: f.bytes.length, path: f.path, lfs: { oid: sha256(f.bytes), size: f.bytes.length, pointerSize: 134 } }
            : { type: 'file', oid: gitSha1(f.bytes), size: f.bytes.length, path: f.path },
        ),
      ]);
    }
    if ((m = new RegExp(`^/${repo}/resolve/([^/]+)/(.+)$`).exec(url.pathname))) {
      const f = byPath.get(decodeURIComponent(m[2]));
      if (!revOk(decodeURIComponent(m[1])) || !f) return json(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
      const common = { 'X-Repo-Commit': o.commit };
      if (f.lfs) {
        res.writeHead(302, { Location: `/cdn/${sha256(f.bytes)}`, 'X-Linked-Etag': `"${sha256(f.bytes)}"`, 'X-Linked-Size': String(f.bytes.length), ETag: `"${gitSha1(f.bytes)}"`, ...common });
        return res.end();
      }
      return serveBytes(req, res, f, { ETag: `"${gitSha1(f.bytes)}"`, ...common });
    }
    if ((m = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname)) && bySha.has(m[1])) return serveBytes(req, res, bySha.get(m[1])!, { ETag: `"${m[1]}"` });
    json(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    ...hub,
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}
