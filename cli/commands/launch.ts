import { launchJob } from '../../supervisor/launch.ts';
import { writeRunReport } from '../run-report.ts';
import { EXIT_ABORTED, EXIT_PERMANENT, JobAborted, PermanentError } from '../../common/errors.ts';
import type { Command } from '../command.ts';
import { runConfigFromFlags, runFlagSpecs } from '../run-flags.ts';
import { PIPELINE_FLAGS } from '../pipeline-flags.ts';

const OWN = new Set(['workers', 'insecure', 'verbose', 'memory-gb', 'data-plane']);

export const launchCommand: Command = {
  name: 'launch',
  summary: 'run a pipelined job on this machine: nats-server, the coordinator and N worker processes',
  usage: 'propipe launch --workers N --config run.yaml [run flags] [--schedule 1f1b|gpipe|zb1] [--micro-batches M]',
  flags: {
    workers: { type: 'string', description: 'number of worker processes', default: '2' },
    config: { type: 'string', description: 'YAML run file' },
    'metrics-port': { type: 'string', description: 'serve the coordinator’s Prometheus metrics on this port' },
    insecure: { type: 'boolean', description: 'no TLS, token or NATS password (default: throwaway credentials for this run)' },
    'memory-gb': { type: 'string', description: 'memory each worker offers the planner (default: 80% of the machine)' },
    'data-plane': { type: 'string', description: 'what workers send tensors over: socket (raw TLS stream beside gRPC, the default) or grpc (the gRPC peer stream)' },
    verbose: { type: 'boolean', description: 'at a terminal, show every worker log line (by default they are folded under the progress display; warnings always show)' },
    ...PIPELINE_FLAGS,
    ...runFlagSpecs(),
  },
  async run(f) {
    // Everything but launch's own flags goes to the coordinator as given.
    const args = process.argv.slice(process.argv.indexOf('launch') + 1);
    const coordinatorArgs: string[] = [];
    for (let i = 0; i < args.length; i++) {
      const name = args[i].replace(/^--/, '').split('=')[0];
      if (OWN.has(name)) {
        if ((name === 'workers' || name === 'memory-gb' || name === 'data-plane') && !args[i].includes('=')) i++;
        continue;
      }
      coordinatorArgs.push(args[i]);
    }
    const outputDir = runConfigFromFlags(f).output_dir;
    const workerArgs = [...(f.has('memory-gb') ? ['--memory-gb', String(f.num('memory-gb'))] : []), ...(f.has('data-plane') ? ['--data-plane', f.str('data-plane')!] : [])];
    const { code, message } = await launchJob({ workers: f.int('workers', 2), coordinatorArgs, workerArgs, insecure: f.bool('insecure'), verbose: f.bool('verbose'), outputDir });
    if (code !== 0) {
      const why = message ? `: ${message}` : ' (see the prefixed logs above)';
      if (code === EXIT_ABORTED) throw new JobAborted(`the job was aborted${why}`);
      if (code === EXIT_PERMANENT) throw new PermanentError(`the job cannot run as configured${why}`);
      throw new Error(`the pipelined job failed${why}`);
    }
    writeRunReport(outputDir);
  },
};
