// Every run-config field as a flag (kebab-case, or snake_case as in YAML and ms-swift), typed by the
// zod schema so flags and YAML never drift, plus ms-swift's own names for the LLaMA Pro flow.
import { parseEvalTasksFlag } from '../recipe/eval-tasks.ts';
import { FIELD_HELP, loadRunConfig, RunConfigError, runConfigSchema, type RunConfig } from '../recipe/run-config.ts';
import { SWIFT_ARGS } from '../recipe/swift-args.ts';
import { UsageError, type Flags, type FlagSpecs } from './args.ts';

type Kind = 'number' | 'string' | 'boolean' | 'enum' | 'array';

function kindOf(schema: unknown): Kind {
  let def = (schema as { _zod: { def: { type: string; innerType?: unknown } } })._zod.def;
  while ((def.type === 'default' || def.type === 'optional') && def.innerType) def = (def.innerType as typeof schema as { _zod: { def: typeof def } })._zod.def;
  return def.type as Kind;
}

const FIELDS = [
  ...Object.entries(runConfigSchema.shape).map(([key, schema]) => ({ key, kind: kindOf(schema), help: FIELD_HELP[key as keyof typeof FIELD_HELP] })),
  ...Object.entries(SWIFT_ARGS).map(([key, a]) => ({ key, kind: a.kind as Kind, help: a.help })),
].map((f) => ({ ...f, flag: f.key.replace(/_/g, '-') }));

export function runFlagSpecs(): FlagSpecs {
  const specs: FlagSpecs = {};
  for (const f of FIELDS) specs[f.flag] = { type: f.kind === 'boolean' ? 'boolean' : 'string', description: f.help };
  return specs;
}

/** The run-config fields given on the command line, typed. */
export function runOverrides(flags: Flags): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of FIELDS) {
    if (!flags.has(f.flag)) continue;
    const text = flags.str(f.flag);
    if (f.kind === 'boolean') out[f.key] = flags.bool(f.flag);
    else if (f.kind === 'number') {
      const v = Number(text);
      if (text === undefined || text.trim() === '' || !Number.isFinite(v)) throw new UsageError(`--${f.flag} must be a number, got '${text}'`);
      out[f.key] = v;
    } else if (f.kind === 'array') {
      try {
        out[f.key] = parseEvalTasksFlag(text ?? '');
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
    } else out[f.key] = text;
  }
  return out;
}

/** The run config of `--config` and the run flags; a bad one is a usage error naming the field. */
export function runConfigFromFlags(flags: Flags): RunConfig {
  try {
    return loadRunConfig(flags.str('config'), runOverrides(flags));
  } catch (err) {
    if (err instanceof RunConfigError) throw new UsageError(err.message);
    throw err;
  }
}
