import path from 'node:path';
import { log } from '../../common/log.ts';
import { ReportError } from '../../report/run-data.ts';
import { writeReport } from '../../report/write.ts';
import { UsageError } from '../args.ts';
import type { Command } from '../command.ts';

export const reportCommand: Command = {
  name: 'report',
  summary: 'write RUN_DIR/report.html: loss with stages and early stops, LR per block, gradient norm, tokens/s, ranks, pipeline timeline, config; several runs overlay',
  usage: 'propipe report RUN_DIR [RUN_DIR ...] [--out FILE] [--title T]',
  flags: {
    out: { type: 'string', description: 'output file (default: report.html in the first run directory)' },
    title: { type: 'string', description: 'page title' },
  },
  async run(f) {
    const dirs = f.positionals;
    if (!dirs.length) throw new UsageError('give at least one run directory (the output_dir of propipe train or launch)');
    try {
      const file = writeReport(dirs, f.str('out') ?? path.join(dirs[0], 'report.html'), { title: f.str('title') });
      log.info({ file, runs: dirs.length }, `report written: open ${file} in a browser`);
      console.log(file);
    } catch (err) {
      if (err instanceof ReportError) throw new UsageError(err.message);
      throw err;
    }
  },
};
