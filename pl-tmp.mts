import os from 'node:os';
import fs from 'node:fs';
import YAML from 'yaml';
import { calibrate } from './tasks/calibrate.ts';
import { cpuProfile } from './plan/calibration.ts';
import { stageOnSplit } from './plan/estimate.ts';
import { runRequest } from './plan/request.ts';
import { parseRunConfig } from './recipe/run-config.ts';
for (let i = 0; i < 4; i++) {
  const t0 = performance.now();
  const cal = await calibrate({ threads: 0 });
  const out: string[] = [];
  for (const t of ['full', 'lora']) {
    const run = YAML.parse(fs.readFileSync(`/tmp/sfull/${t}.yaml`, 'utf8'));
    for (const clock of ['wall', 'cpu'] as const) {
      const req = runRequest(parseRunConfig(run), { device: cpuProfile(cal, os.totalmem() * 0.8, clock), workers: 1, microBatches: 2, schedule: '1f1b', frozenDtype: 'fp32' });
      out.push(`${t}-${clock} ${stageOnSplit(req, 0, [{ start: 0, end: 8 }]).ranks[0].step_seconds.toFixed(3)}`);
    }
  }
  const e = cal.efficiency;
  console.log(out.join(' '), 'par', cal.parallelism.toFixed(2), 'mm', (cal.matmul_flops / 1e9).toFixed(0), 'bw', (cal.bandwidth / 1e9).toFixed(0), 'op_us', (cal.op_seconds * 1e6).toFixed(2), 'run_us', (cal.run_seconds * 1e6).toFixed(0), 'eff', [e.forward, e.inputGrad, e.weightGrad].map((x) => x.toFixed(2)).join('/'), 'secs', ((performance.now() - t0) / 1000).toFixed(1));
}
