// Every subcommand, in the order `propipe --help` lists them.
import type { Command } from '../command.ts';
import { coordinatorCommand } from './coordinator.ts';
import { launchCommand } from './launch.ts';
import { workerCommand } from './worker.ts';
import { demoCommand } from './demo.ts';
import { downloadCommand } from './download.ts';
import { evalCommand } from './eval.ts';
import { expandCommand } from './expand.ts';
import { gradCommand } from './grad.ts';
import { initModel } from './init-model.ts';
import { k8sCommand } from './k8s.ts';
import { mergeCommand } from './merge.ts';
import { chatCommand } from './chat.ts';
import { serveCommand } from './serve.ts';
import { planCommand } from './plan.ts';
import { studyCommand } from './study.ts';
import { sftCommand, trainCommand } from './train.ts';
import { reportCommand } from './report.ts';

export const COMMANDS: readonly Command[] = [demoCommand, downloadCommand, initModel, expandCommand, trainCommand, sftCommand, planCommand, launchCommand, reportCommand, coordinatorCommand, workerCommand, mergeCommand, evalCommand, gradCommand, studyCommand, k8sCommand, serveCommand, chatCommand];
