// `propipe <command> [flags]`: dispatch only; every command calls into model/, recipe/ and the rest.
import { setLogFormat } from '../common/log.ts';
import { formatFlags, parseFlags, UsageError } from './args.ts';
import type { Command } from './command.ts';
import { COMMANDS } from './commands/index.ts';
import { didYouMean } from '../recipe/suggest.ts';

function overview(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'propipe — LLaMA Pro fine-tuning of Llama-family models across a pipeline of workers',
    '',
    'Usage: propipe <command> [flags]     (propipe <command> --help for its flags)',
    '       --log-format json|pretty      log lines as JSON or one readable line each (default: pretty at a terminal, JSON when piped)',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
  ].join('\n');
}

export function commandHelp(c: Command): string {
  return [`Usage: ${c.usage}`, '', c.summary, '', 'Flags:', formatFlags(c.flags), '  --help  show this help'].join('\n');
}

/**
 * Takes `--log-format json|pretty` out of the arguments (every command accepts it; `launch` passes the
 * rest of process.argv on to the coordinator, so it is removed there too).
 */
function takeLogFormat(argv: string[]): string | null {
  const i = argv.findIndex((a) => a === '--log-format' || a.startsWith('--log-format='));
  if (i < 0) return null;
  const value = argv[i].includes('=') ? argv[i].split('=')[1] : argv[i + 1];
  if (value !== 'json' && value !== 'pretty') throw new UsageError(`--log-format must be json or pretty, got '${value ?? ''}'`);
  const count = argv[i].includes('=') ? 1 : 2;
  argv.splice(i, count);
  process.argv.splice(i + 2, count);
  setLogFormat(value);
  return value;
}

async function main(argv: string[]): Promise<number> {
  try {
    takeLogFormat(argv);
  } catch (err) {
    console.error(`propipe: ${(err as Error).message}`);
    return 2;
  }
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(overview());
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    console.error(`propipe: unknown command '${name}'${didYouMean(name, COMMANDS.map((c) => c.name))}\n\n${overview()}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(commandHelp(command));
    return 0;
  }
  try {
    await command.run(parseFlags(rest, command.flags));
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`propipe ${name}: ${err.message}\nRun 'propipe ${name} --help' for the flags.`);
      return 2;
    }
    console.error(`propipe ${name}: ${(err as Error).message}`);
    if (process.env.PROPIPE_DEBUG) console.error((err as Error).stack);
    const code = (err as { exitCode?: unknown }).exitCode;
    return typeof code === 'number' ? code : 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
