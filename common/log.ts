// One pino logger for the whole process: structured JSON when piped, pretty when a person watches.
import pino from 'pino';

const pretty = process.stderr.isTTY && !process.env.PROPIPE_LOG_JSON;

export const log = pino(
  { level: process.env.PROPIPE_LOG_LEVEL ?? 'info', base: undefined },
  pretty
    ? pino.transport({ target: 'pino-pretty', options: { destination: 2, ignore: 'pid,hostname' } })
    : pino.destination(2),
);

export function childLog(bindings: Record<string, unknown>) {
  return log.child(bindings);
}
