// Every subcommand, in the order `propipe --help` lists them.
import type { Command } from '../command.ts';
import { evalCommand } from './eval.ts';
import { gradCommand } from './grad.ts';
import { initModel } from './init-model.ts';

export const COMMANDS: readonly Command[] = [initModel, evalCommand, gradCommand];
