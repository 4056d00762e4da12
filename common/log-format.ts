// One readable line per log event for a person at a terminal: time, level, component, message, then
// the fields as key=value (numbers to four significant digits), colored by level.
import { styleText } from 'node:util';

type Style = Parameters<typeof styleText>[0];

const LEVELS: Record<number, [string, Style]> = {
  10: ['TRACE', 'gray'],
  20: ['DEBUG', 'gray'],
  30: ['INFO ', 'green'],
  40: ['WARN ', 'yellow'],
  50: ['ERROR', 'red'],
  60: ['FATAL', 'red'],
};
const HIDDEN = new Set(['level', 'time', 'msg', 'component', 'pid', 'hostname']);
const color = !process.env.NO_COLOR;

export function paint(style: Style, text: string): string {
  return color ? styleText(style, text) : text;
}

/** 5.662106 → 5.662, 27797.3 → 27797, 0.000123456 → 0.0001235. */
export function formatNumber(x: number): string {
  if (!Number.isFinite(x) || Number.isInteger(x)) return String(x);
  const abs = Math.abs(x);
  if (abs >= 1000) return String(Math.round(x));
  if (abs < 1e-3) return x.toExponential(2);
  return String(Number(x.toPrecision(4)));
}

/** Nested values stay on the line without JSON punctuation: [a,b], k:v,k:v, (k:v k:v) per object in a list. */
function formatValue(v: unknown, nested = false): string {
  if (typeof v === 'number') return formatNumber(v);
  if (typeof v === 'string') return /\s/.test(v) ? JSON.stringify(v) : v;
  if (v === null || typeof v !== 'object') return String(v);
  if ('message' in v && typeof v.message === 'string') return formatValue(v.message);
  if (Array.isArray(v)) return v.every((x) => x === null || typeof x !== 'object') ? v.map((x) => formatValue(x)).join(',') : v.map((x) => `(${formatValue(x, true)})`).join(' ');
  return Object.entries(v).map(([k, x]) => `${k}:${formatValue(x)}`).join(nested ? ' ' : ',');
}

/** `tag` names the process a line came from (launch: coord, w0, w1, ...). */
export function formatLogLine(record: Record<string, unknown>, tag?: string): string {
  const [label, style] = LEVELS[Number(record.level)] ?? ['INFO ', 'green'];
  const time = new Date(typeof record.time === 'number' ? record.time : Date.now()).toTimeString().slice(0, 8);
  const source = [tag, record.component].filter(Boolean).join('/');
  const fields = Object.entries(record)
    .filter(([k, v]) => !HIDDEN.has(k) && v !== undefined)
    .map(([k, v]) => `${paint('gray', `${k}=`)}${formatValue(v)}`);
  const msg = String(record.msg ?? '');
  return [paint('gray', time), paint(style, label), paint('cyan', source.padEnd(17)), Number(record.level) >= 40 ? paint(style, msg) : msg, ...fields].join(' ');
}
