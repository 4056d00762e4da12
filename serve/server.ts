// The HTTP front: routing, the API key, /health, /metrics and /v1/models, errors as OpenAI JSON.
// /v1/* needs the key when one is set; /health and /metrics do not (as in vLLM), so probes and
// Prometheus scrape without it.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual, createHash } from 'node:crypto';
import { childLog } from '../common/log.ts';
import { QueueFullError, ShuttingDownError } from './engine.ts';
import type { ServeMetrics } from './metrics.ts';
import { ApiError, badKey } from './openai/errors.ts';
import { handleGenerate, type GenerateContext } from './openai/generate.ts';

const log = childLog({ component: 'serve' });
const MAX_BODY_BYTES = 16 * 1024 * 1024;

export interface ServedModelInfo {
  id: string;
  /** The base model's id for an adapter, null for the base. */
  parent: string | null;
  root: string;
}

export interface ServerOptions extends GenerateContext {
  apiKey: string | null;
  metrics: ServeMetrics;
  info: readonly ServedModelInfo[];
}

function sameKey(given: string, expected: string): boolean {
  const h = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(given), h(expected));
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new ApiError(413, `request body over ${MAX_BODY_BYTES} bytes`, 'invalid_request_error');
    chunks.push(c as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new ApiError(400, `the body is not valid JSON: ${(err as Error).message}`, 'invalid_request_error', 'body');
  }
}

function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const json = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(json)), ...headers });
  res.end(json);
}

export function createApiServer(o: ServerOptions): Server {
  const created = Math.floor(Date.now() / 1000);
  const route = async (req: IncomingMessage, res: ServerResponse): Promise<string> => {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname.replace(/\/+$/, '');
    if (path === '/health' && req.method === 'GET') {
      // 503 while draining, so a load balancer stops sending new requests.
      res.writeHead(o.engine.isDraining ? 503 : 200).end();
      return 'health';
    }
    if (path === '/metrics' && req.method === 'GET') {
      const text = await o.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': o.metrics.registry.contentType }).end(text);
      return 'metrics';
    }
    if (path.startsWith('/v1') && o.apiKey !== null) {
      const auth = req.headers.authorization ?? '';
      const given = auth.startsWith('Bearer ') ? auth.slice(7) : null;
      if (given === null || !sameKey(given, o.apiKey)) throw badKey(given !== null);
    }
    if (path === '/v1/models' && req.method === 'GET') {
      const data = o.info.map((m) => ({ id: m.id, object: 'model', created, owned_by: 'propipe', root: m.root, parent: m.parent, max_model_len: o.maxModelLen }));
      sendJson(res, 200, { object: 'list', data });
      return 'models';
    }
    const kind = path === '/v1/chat/completions' ? 'chat' : path === '/v1/completions' ? 'completion' : null;
    if (kind === null) throw new ApiError(404, `no route ${req.method} ${path}; endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions, GET /health, GET /metrics`, 'invalid_request_error');
    if (req.method !== 'POST') throw new ApiError(405, `${path} takes POST`, 'invalid_request_error');
    await handleGenerate(o, kind, await readJson(req), req, res);
    return kind;
  };

  return createServer((req, res) => {
    route(req, res).then(
      (endpoint) => o.metrics.requests.inc({ endpoint, status: String(res.statusCode) }),
      (err: unknown) => {
        let e: ApiError;
        if (err instanceof ApiError) e = err;
        else if (err instanceof QueueFullError) e = new ApiError(429, err.message, 'rate_limit_exceeded', null, 'queue_full');
        else if (err instanceof ShuttingDownError) e = new ApiError(503, err.message, 'server_error', null, 'shutting_down');
        else {
          log.error({ err }, 'request failed');
          e = new ApiError(500, `internal error: ${(err as Error).message}`, 'server_error');
        }
        o.metrics.requests.inc({ endpoint: 'error', status: String(e.status) });
        if (res.headersSent) {
          // A stream already started: report in-band, as vLLM does, then close.
          if (!res.writableEnded) res.end(`data: ${JSON.stringify(e.toJSON())}\n\ndata: [DONE]\n\n`);
          return;
        }
        sendJson(res, e.status, e.toJSON(), e.status === 429 ? { 'retry-after': '1' } : {});
      },
    );
  });
}
