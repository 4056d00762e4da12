// What a subcommand is: its help text, its flags and the function it calls.
import type { Flags, FlagSpecs } from './args.ts';

export interface Command {
  name: string;
  summary: string;
  usage: string;
  flags: FlagSpecs;
  run(flags: Flags): Promise<void>;
}
