// The command line as ms-swift and HF users write it, turned into what node's parseArgs takes:
// `--learning_rate` is `--learning-rate`, a boolean may carry a value (`--use_llamapro True`), a
// list flag may take several values (`--include a b`), and an unknown flag is named with the
// closest known one.
import { didYouMean } from '../recipe/suggest.ts';
import { UsageError, type FlagSpecs } from './args.ts';

const TRUE = /^(true|yes|1)$/i;
const FALSE = /^(false|no|0)$/i;

export interface NormalizedArgv {
  args: string[];
  /** Boolean flags given an explicit false value (`--resume false`). */
  falseFlags: Set<string>;
}

function flagName(raw: string, specs: FlagSpecs): string {
  if (raw in specs) return raw;
  const kebab = raw.replace(/_/g, '-');
  if (kebab in specs) return kebab;
  // Suggest in the spelling the user writes (snake_case for ms-swift habits).
  const names = Object.keys(specs).map((n) => (raw.includes('_') ? n.replace(/-/g, '_') : n));
  throw new UsageError(`unknown flag --${raw}${didYouMean(raw, names, '--')}`);
}

export function normalizeArgv(argv: readonly string[], specs: FlagSpecs): NormalizedArgv {
  const args: string[] = [];
  const falseFlags = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i];
    if (tok === '--') {
      args.push(...argv.slice(i));
      break;
    }
    if (!tok.startsWith('--') || tok === '--help') {
      args.push(tok);
      continue;
    }
    const eq = tok.indexOf('=');
    const name = flagName(eq < 0 ? tok.slice(2) : tok.slice(2, eq), specs);
    const spec = specs[name];
    const inline = eq < 0 ? undefined : tok.slice(eq + 1);
    if (spec.type === 'boolean') {
      let value = inline;
      if (value === undefined && i + 1 < argv.length && (TRUE.test(argv[i + 1]) || FALSE.test(argv[i + 1]))) value = argv[++i];
      if (value !== undefined && !TRUE.test(value) && !FALSE.test(value)) throw new UsageError(`--${name} is a switch: give it alone, or with true/false, got '${value}'`);
      if (value !== undefined && FALSE.test(value)) falseFlags.add(name);
      else args.push(`--${name}`);
      continue;
    }
    if (inline !== undefined) {
      args.push(`--${name}=${inline}`);
      continue;
    }
    if (i + 1 >= argv.length) throw new UsageError(`--${name} needs a value`);
    // name=value form, so that a value starting with '-' (`--seed -1`) is not taken for a flag.
    args.push(`--${name}=${argv[++i]}`);
    // `--include a b c` (argparse nargs='*', as huggingface-cli and ms-swift take lists).
    while (spec.multiple && i + 1 < argv.length && !argv[i + 1].startsWith('-')) args.push(`--${name}=${argv[++i]}`);
  }
  return { args, falseFlags };
}
