import { calibrate } from './tasks/calibrate.ts';
const h = Number(process.argv[2] ?? 512);
const c = await calibrate({ threads: 0, hidden: h, batch: 4, seq: 128 });
console.log(JSON.stringify({ par: c.parallelism, eff: c.efficiency, mm: c.matmul_flops / 1e9 }));
