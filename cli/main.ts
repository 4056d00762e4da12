// `propipe <command> [flags]`: dispatch only; every command calls into model/, recipe/ and the rest.
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
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
  ].join('\n');
}

export function commandHelp(c: Command): string {
  return [`Usage: ${c.usage}`, '', c.summary, '', 'Flags:', formatFlags(c.flags), '  --help  show this help'].join('\n');
}

async function main(argv: string[]): Promise<number> {
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
