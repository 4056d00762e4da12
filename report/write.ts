// `propipe report`: reads one or more run directories and writes one report.html that overlays them.
import { writeFileAtomic, writeFully } from '../common/atomic-file.ts';
import { buildCharts } from './charts.ts';
import { evalTasksTable, renderPage, summaryTable, type Table } from './page.ts';
import { readRun } from './run-data.ts';

export interface ReportOptions {
  title?: string;
  /** Tables shown above the charts after the run summary (the demo: its retention table). */
  tables?: Table[];
  /** Run names in legends and tables (default: the directory names). */
  names?: string[];
}

/** Writes the report of `dirs` to `file` (atomically) and returns the file. */
export function writeReport(dirs: string[], file: string, o: ReportOptions = {}): string {
  const runs = dirs.map((d, i) => ({ ...readRun(d), ...(o.names?.[i] ? { name: o.names[i] } : {}) }));
  const title = o.title ?? `propipe report: ${runs.map((r) => r.name).join(', ')}`;
  const tables = [...(o.tables ?? []), summaryTable(runs), evalTasksTable(runs)].filter((t): t is Table => t !== null);
  const html = renderPage(title, runs, buildCharts(runs), tables);
  writeFileAtomic(file, (fd) => writeFully(fd, Buffer.from(html, 'utf8')));
  return file;
}
