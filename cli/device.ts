// --device and --threads, shared by every command that runs a graph.
import type { Device } from '../model/graph/session.ts';
import { UsageError, type Flags, type FlagSpecs } from './args.ts';

export const DEVICE_FLAGS: FlagSpecs = {
  device: { type: 'string', description: 'execution provider: cpu or cuda (cuda needs the CUDA build of onnxruntime-node, see README)', default: 'cpu' },
  threads: { type: 'string', description: 'intra-op threads per session (0 = all cores)', default: '0' },
};

export function deviceOptions(flags: Flags): { device: Device; threads: number } {
  const device = flags.str('device') ?? 'cpu';
  if (device !== 'cpu' && device !== 'cuda') throw new UsageError(`--device must be cpu or cuda, got '${device}'`);
  return { device, threads: flags.int('threads', 0) };
}
