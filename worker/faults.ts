// The fault-injection hooks the integration tests use to kill or stall a worker at a chosen point (environment variables,
// read once; they do nothing unless set).
import fs from 'node:fs';

const env = (name: string) => {
  const v = process.env[name];
  return v === undefined ? undefined : Number(v);
};

const CRASH_AT_STEP = env('PROPIPE_TEST_CRASH_AT_STEP');
const CRASH_IN_SAVE = env('PROPIPE_TEST_CRASH_IN_SAVE');
const STALL_AT_STEP = env('PROPIPE_TEST_STALL_AT_STEP');
const STALL_MS = env('PROPIPE_TEST_STALL_MS') ?? 0;
const NAN_AT_STEP = env('PROPIPE_TEST_NAN_AT_STEP');
const NAN_FROM_STEP = env('PROPIPE_TEST_NAN_FROM_STEP');

function kill9(): never {
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable');
}

/** In the middle of step `step` (after its first action): kill -9 this process. */
export function crashPoint(step: number): void {
  if (CRASH_AT_STEP === step) kill9();
}

/**
 * Arms a kill -9 inside the checkpoint write of `step`: the next file write of this process (the
 * shard's temp file: length prefix, header, then the tensors) dies after its second write call, with
 * the prefix and header synced to disk and no tensor data (a rank with no trainable tensors has none),
 * so the crash tears the real shard write.
 */
export function crashInSave(step: number): void {
  if (CRASH_IN_SAVE !== step) return;
  const write = fs.writeSync as (fd: number, ...rest: unknown[]) => number;
  let calls = 0;
  (fs as { writeSync: unknown }).writeSync = (fd: number, ...rest: unknown[]) => {
    const n = write(fd, ...rest);
    // Writes to stdout and stderr (the logger) are not the shard.
    if (fd > 2 && ++calls === 2) {
      fs.fsyncSync(fd);
      kill9();
    }
    return n;
  };
}

let stalled = false;

/** Once per process: sleep at step `step` (a worker that is alive but slow). */
export async function stallPoint(step: number): Promise<void> {
  if (stalled || STALL_AT_STEP !== step || STALL_MS <= 0) return;
  stalled = true;
  await new Promise((r) => setTimeout(r, STALL_MS));
}

/** Puts a NaN into an outgoing activation (a diverging rank), at one step or from a step on. */
export function poisonPoint(step: number, data: Float32Array): void {
  if (NAN_AT_STEP === step || (NAN_FROM_STEP !== undefined && step >= NAN_FROM_STEP)) data[0] = NaN;
}
