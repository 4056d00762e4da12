// Flag parsing shared by every subcommand: node's parseArgs plus typed getters whose errors name the flag.
import { parseArgs } from 'node:util';
import { normalizeArgv } from './argv.ts';

export interface FlagSpec {
  type: 'string' | 'boolean';
  description: string;
  default?: string | boolean;
  multiple?: boolean;
}

export type FlagSpecs = Record<string, FlagSpec>;

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export class Flags {
  constructor(
    private readonly values: Record<string, string | boolean | string[] | undefined>,
    readonly positionals: string[],
  ) {}

  has(name: string): boolean {
    return this.values[name] !== undefined;
  }

  str(name: string): string | undefined {
    const v = this.values[name];
    return typeof v === 'string' ? v : undefined;
  }

  required(name: string): string {
    const v = this.str(name);
    if (v === undefined || v === '') throw new UsageError(`--${name} is required`);
    return v;
  }

  /** Every value of a `multiple` flag, in order (none: []). */
  list(name: string): string[] {
    const v = this.values[name];
    return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
  }

  bool(name: string): boolean {
    return this.values[name] === true;
  }

  int(name: string, fallback?: number): number {
    const v = this.str(name);
    if (v === undefined) {
      if (fallback === undefined) throw new UsageError(`--${name} is required`);
      return fallback;
    }
    const n = Number(v);
    if (!Number.isInteger(n)) throw new UsageError(`--${name} must be an integer, got '${v}'`);
    return n;
  }

  num(name: string, fallback?: number): number {
    const v = this.str(name);
    if (v === undefined) {
      if (fallback === undefined) throw new UsageError(`--${name} is required`);
      return fallback;
    }
    const n = Number(v);
    if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${v}'`);
    return n;
  }
}

export function parseFlags(argv: string[], specs: FlagSpecs): Flags {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [name, s] of Object.entries(specs)) options[name] = s.multiple ? { type: s.type, multiple: true } : { type: s.type };
  const { args, falseFlags } = normalizeArgv(argv, specs);
  try {
    const { values, positionals } = parseArgs({ args, options, allowPositionals: true, strict: true });
    for (const name of falseFlags) (values as Record<string, unknown>)[name] = false;
    return new Flags(values as Record<string, string | boolean | string[] | undefined>, positionals);
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional.*$/s, ''));
  }
}

export function formatFlags(specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, s]) => [`--${name}${s.type === 'string' ? ' <value>' : ''}`, s.description + (s.default !== undefined ? ` (default: ${s.default})` : '')]);
  const width = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([a, b]) => `  ${a.padEnd(width)}  ${b}`).join('\n');
}
