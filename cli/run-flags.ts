// Every run-config field as a flag (kebab-case), typed by the zod schema, so flags and YAML never drift.
import { FIELD_HELP, runConfigSchema } from '../recipe/run-config.ts';
import { UsageError, type Flags, type FlagSpecs } from './args.ts';

type Kind = 'number' | 'string' | 'boolean' | 'enum';

function kindOf(schema: unknown): Kind {
  let def = (schema as { _zod: { def: { type: string; innerType?: unknown } } })._zod.def;
  while ((def.type === 'default' || def.type === 'optional') && def.innerType) def = (def.innerType as typeof schema as { _zod: { def: typeof def } })._zod.def;
  return def.type as Kind;
}

const FIELDS = Object.entries(runConfigSchema.shape).map(([key, schema]) => ({ key, flag: key.replace(/_/g, '-'), kind: kindOf(schema) }));

export function runFlagSpecs(): FlagSpecs {
  const specs: FlagSpecs = {};
  for (const f of FIELDS) specs[f.flag] = { type: f.kind === 'boolean' ? 'boolean' : 'string', description: FIELD_HELP[f.key as keyof typeof FIELD_HELP] };
  return specs;
}

/** The run-config fields given on the command line, typed. */
export function runOverrides(flags: Flags): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of FIELDS) {
    if (!flags.has(f.flag)) continue;
    if (f.kind === 'boolean') out[f.key] = flags.bool(f.flag);
    else if (f.kind === 'number') {
      const v = Number(flags.str(f.flag));
      if (!Number.isFinite(v)) throw new UsageError(`--${f.flag} must be a number, got '${flags.str(f.flag)}'`);
      out[f.key] = v;
    } else out[f.key] = flags.str(f.flag);
  }
  return out;
}
