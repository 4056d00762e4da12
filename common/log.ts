// One pino logger for the whole process: JSON lines when stderr is piped (or with --log-format json),
// one readable colored line per event when a person watches the terminal. A live progress display
// owns the terminal's last lines; log lines are printed above it through `setLogPrinter`.
import pino from 'pino';
import { formatLogLine } from './log-format.ts';

export type LogFormat = 'json' | 'pretty';

let format: LogFormat = process.stderr.isTTY && !process.env.PROPIPE_LOG_JSON ? 'pretty' : 'json';
let printer: ((text: string) => void) | null = null;
const stderr = pino.destination({ dest: 2, sync: true });

export function setLogFormat(f: LogFormat): void {
  format = f;
}

export function logFormat(): LogFormat {
  return format;
}

/** A live display takes over printing (null gives it back). */
export function setLogPrinter(p: ((text: string) => void) | null): void {
  printer = p;
}

/** Prints one finished line to stderr, above the live display if there is one. */
export function printLine(text: string): void {
  if (printer) printer(text);
  else stderr.write(text + '\n');
}

export const log = pino(
  { level: process.env.PROPIPE_LOG_LEVEL ?? 'info', base: undefined },
  {
    write(line: string) {
      if (format === 'json') stderr.write(line);
      else printLine(formatLogLine(JSON.parse(line)));
    },
  },
);

export function childLog(bindings: Record<string, unknown>) {
  return log.child(bindings);
}
