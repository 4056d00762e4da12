// Hosts of their own for integration tests: one network namespace per host, veth pairs on a bridge,
// addresses of the test's own, and optionally a hosts file per namespace (`ip netns exec` mounts
// /etc/netns/<ns>/hosts over /etc/hosts) so names resolve as cluster DNS would. Needs root and
// iproute2: setUp() says why not otherwise, for the test to skip with that reason.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';

export interface Host {
  ns: string;
  ip: string;
}

export function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

export class NetnsLab {
  readonly bridge: string;
  readonly hosts: Host[];

  /** `names` become namespaces `pp<name><tag>`; addresses are `<subnet>.<first + i>`. */
  constructor(
    names: string[],
    readonly subnet: string,
    readonly tag = String(process.pid % 10000),
    first = 10,
  ) {
    this.bridge = `ppbr${tag}`;
    this.hosts = names.map((n, i) => ({ ns: `pp${n}${tag}`, ip: `${subnet}.${first + i}` }));
  }

  /** The host-side end of host i's link (take it down to cut the host off). */
  hostSide(i: number): string {
    return `ppv${i}${this.tag}`;
  }

  setUp(): string | null {
    if (process.getuid?.() !== 0) return 'needs root for network namespaces';
    try {
      ip('link', 'add', this.bridge, 'type', 'bridge');
      ip('link', 'set', this.bridge, 'up');
      this.hosts.forEach((h, i) => {
        ip('netns', 'add', h.ns);
        ip('netns', 'exec', h.ns, 'ip', 'link', 'set', 'lo', 'up');
        ip('link', 'add', this.hostSide(i), 'type', 'veth', 'peer', 'name', `ppn${i}${this.tag}`);
        ip('link', 'set', `ppn${i}${this.tag}`, 'netns', h.ns);
        ip('link', 'set', this.hostSide(i), 'master', this.bridge);
        ip('link', 'set', this.hostSide(i), 'up');
        ip('netns', 'exec', h.ns, 'ip', 'addr', 'add', `${h.ip}/24`, 'dev', `ppn${i}${this.tag}`);
        ip('netns', 'exec', h.ns, 'ip', 'link', 'set', `ppn${i}${this.tag}`, 'up');
      });
      return null;
    } catch (err) {
      this.tearDown();
      return `network namespaces are not available here (${(err as Error).message})`;
    }
  }

  /** Gives host i a new address (a replacement pod gets a new IP). */
  readdress(i: number, newIp: string): void {
    const h = this.hosts[i];
    ip('netns', 'exec', h.ns, 'ip', 'addr', 'flush', 'dev', `ppn${i}${this.tag}`);
    ip('netns', 'exec', h.ns, 'ip', 'addr', 'add', `${newIp}/24`, 'dev', `ppn${i}${this.tag}`);
    h.ip = newIp;
  }

  /**
   * Names every namespace resolves, and nothing else (no nameserver: lookups of other names fail
   * at once). Rewritten in place, so processes already running see changes, as with cluster DNS.
   */
  writeHosts(names: Record<string, string>): void {
    const text = ['127.0.0.1 localhost', ...Object.entries(names).map(([n, addr]) => `${addr} ${n}`)].join('\n') + '\n';
    for (const h of this.hosts) {
      fs.mkdirSync(`/etc/netns/${h.ns}`, { recursive: true });
      fs.writeFileSync(`/etc/netns/${h.ns}/hosts`, text);
      fs.writeFileSync(`/etc/netns/${h.ns}/resolv.conf`, 'nameserver 127.0.0.1\n');
    }
  }

  tearDown(): void {
    this.hosts.forEach((h, i) => {
      spawnSync('ip', ['link', 'del', this.hostSide(i)]);
      spawnSync('ip', ['netns', 'del', h.ns]);
      fs.rmSync(`/etc/netns/${h.ns}`, { recursive: true, force: true });
    });
    spawnSync('ip', ['link', 'del', this.bridge]);
  }
}

/** Runs a command inside a namespace; every output line goes to `lines`, prefixed with `name`. */
export function inNs(ns: string, args: string[], lines: string[], name: string, env: NodeJS.ProcessEnv = { ...process.env, PROPIPE_LOG_JSON: '1', PROPIPE_LOG_LEVEL: 'info' }): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  for (const s of [child.stdout!, child.stderr!]) readline.createInterface({ input: s }).on('line', (l) => lines.push(`${name} ${l}`));
  return child;
}

export const exited = (c: ChildProcess) => new Promise<number>((r) => (c.exitCode !== null ? r(c.exitCode) : c.once('exit', (code) => r(code ?? 1))));
