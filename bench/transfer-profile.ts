// Where the CPU time of peer frames goes: runs bench/transfer.ts for one tensor size (TCP, TLS, plain
// gRPC and peer frames, plain and TLS) under V8's CPU profiler in both processes, and sums self time
// by what the code does: copies (Buffer copies in grpc-js framing and reassembly, protobuf's writer,
// the frame assembler), the garbage collector, native code (HTTP/2, TLS, sockets), JavaScript
// elsewhere, idle. The raw TCP/TLS trials run in the same processes and count too (mostly idle and
// native writes), so read it as where the peer path's extra CPU goes, not an exact split.
// Prints one JSON document to stdout.
//
//   node --import tsx bench/transfer-profile.ts [--size 4] [--total-mb 64] [--planes current,tls]
// (--planes socket-tls profiles the socket data plane over TLS alone, beside the raw sockets.)
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const CATEGORIES: [string, RegExp][] = [
  ['idle', /^\(idle\)/],
  ['garbageCollector', /^\(garbage collector\)/],
  ['nativeHttp2TlsSockets', /^\(program\)|^writeBuffer|^writev|^writeGeneric|^onStreamRead|^writeUtf8String/],
  ['copies', /^_copyActual|^writeBytesBuffer_set|^push .*frames\.ts|^(push|fill) .*data-wire\.ts|^FastBuffer|^createUnsafeBuffer|^concat/],
  ['protobuf', /protobufjs|reader\.js|writer\.js|writer_buffer\.js|decode|encode/],
  ['startupAndLoader', /loader|hooks|lexer|compileSourceTextModule|wrapSafe|spawnSync|esbuild/],
];

/** Milliseconds per category, and the heaviest functions of the uncategorized rest. */
function categorize(p: Profile): { ms: Record<string, number>; otherTop: string[] } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const ms: Record<string, number> = {};
  const other = new Map<string, number>();
  p.samples.forEach((id, i) => {
    const f = byId.get(id)!.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url.split('/').pop()}`;
    const cat = CATEGORIES.find(([, re]) => re.test(key))?.[0] ?? 'otherJs';
    ms[cat] = (ms[cat] ?? 0) + p.timeDeltas[i] / 1000;
    if (cat === 'otherJs') other.set(key, (other.get(key) ?? 0) + p.timeDeltas[i] / 1000);
  });
  const otherTop = [...other].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, v]) => `${k}: ${Math.round(v)} ms`);
  return { ms, otherTop };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const flag = (name: string, def: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < argv.length ? argv[i + 1] : def;
  };
  const size = flag('size', '4');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-transfer-prof-'));
  const script = fileURLToPath(new URL('./transfer.ts', import.meta.url));
  const args = ['--import', 'tsx', '--cpu-prof', `--cpu-prof-dir=${dir}`, script, '--sizes', size, '--total-mb', flag('total-mb', '64'), '--trials', '2', '--chunks', '1024', '--variants', 'tls', '--variant-sizes', size, '--sweep-sizes', '0', '--planes', flag('planes', 'current,tls')];
  const { stdout } = await promisify(execFile)(process.execPath, args, { maxBuffer: 16 << 20 });
  const transfer = JSON.parse(stdout) as { summary: unknown };
  // Main threads only (thread 0 of each process): the sender (started first) and the receiver.
  const files = fs.readdirSync(dir).filter((f) => /\.0\.\d+\.cpuprofile$/.test(f)).sort();
  const processes = files.map((f, i) => {
    const { ms, otherTop } = categorize(JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as Profile);
    // Shares of the time spent moving bytes: idle and module loading at start-up left out.
    const moving = Object.entries(ms).filter(([k]) => k !== 'idle' && k !== 'startupAndLoader');
    const busy = moving.reduce((a, [, v]) => a + v, 0);
    const share = Object.fromEntries(moving.sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, Math.round((1000 * v) / busy) / 1000]));
    return { process: i === 0 ? 'sender' : 'receiver', busyMs: Math.round(busy), idleMs: Math.round(ms.idle ?? 0), startupMs: Math.round(ms.startupAndLoader ?? 0), shareOfBusy: share, otherTop };
  });
  fs.rmSync(dir, { recursive: true, force: true });
  process.stdout.write(JSON.stringify({ bench: 'transfer-profile', tensorMB: Number(size), host: { cpus: os.cpus().length, loadavg: os.loadavg() }, processes, transfer: transfer.summary }, null, 2) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
