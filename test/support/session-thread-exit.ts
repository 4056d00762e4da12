// Child of test/session-thread.test.ts: runs a graph in the session thread and then simply returns,
// so the test can check that the thread does not keep the process alive.
import { Graph } from '../../model/graph/graph.ts';
import { CompiledGraph } from '../../model/graph/session.ts';

const g = new Graph('exit');
const x = g.input('x', 'float32', [2]);
g.output(g.rename(g.op('Neg', [x]), 'y'));
const c = await CompiledGraph.create(g, { thread: true });
const out = await c.run({ x: { dtype: 'float32', shape: [2], data: Float32Array.of(1, 2) } });
process.stdout.write(`${Array.from(out.y.data as Float32Array).join(',')}\n`);
