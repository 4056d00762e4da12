// The HTML report written at the end of `train` and `launch`: a failure to draw it is a warning, never
// a failed run (the weights and metrics are already written).
import path from 'node:path';
import { log } from '../common/log.ts';
import { writeReport } from '../report/write.ts';

export function writeRunReport(outputDir: string): void {
  try {
    const file = writeReport([outputDir], path.join(outputDir, 'report.html'));
    log.info({ file }, `report written: open ${file} in a browser`);
  } catch (err) {
    log.warn({ err: (err as Error).message, outputDir }, `no report written; run 'propipe report ${outputDir}' to retry`);
  }
}
