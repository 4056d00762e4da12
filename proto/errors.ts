// Which failures end a job and which are retried, as gRPC statuses (part of the wire contract). A
// transient rejection (a barrier of an old assignment, a coordinator that is re-assigning) is ABORTED:
// the worker registers again, as it does when the coordinator is UNAVAILABLE. A job that is over for
// good is FAILED_PRECONDITION, with the exit code in the trailer `propipe-exit-code`: 4 for a request
// that can never succeed (more workers than blocks, a partition that does not fit, a model or config
// that does not match; common/errors.ts PermanentError), 3 for a job aborted while it ran (JobAborted),
// 0 for a job that already finished (JobFinished). A wrong token gets an access status, also final
// (exit 4). The worker stops at once with the message.
import * as grpc from '@grpc/grpc-js';
import { EXIT_ABORTED, JobAborted, JobFinished, PermanentError } from '../common/errors.ts';

const FINAL_STATUS = new Set<number>([grpc.status.FAILED_PRECONDITION, grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED]);
const EXIT_CODE_KEY = 'propipe-exit-code';

/** What a coordinator answers an error with: final (with its exit code) or retryable. */
export function statusOf(err: Error): Partial<grpc.StatusObject> {
  if (!(err instanceof PermanentError || err instanceof JobAborted || err instanceof JobFinished)) return { code: grpc.status.ABORTED, details: err.message };
  const metadata = new grpc.Metadata();
  metadata.set(EXIT_CODE_KEY, String(err.exitCode));
  return { code: grpc.status.FAILED_PRECONDITION, details: err.message, metadata };
}

/** A gRPC error that retrying cannot fix, as the error the CLI exits with (0, 3 or 4); null for the rest. */
export function finalFromStatus(err: unknown): PermanentError | JobAborted | JobFinished | null {
  const e = err as { code?: unknown; details?: unknown; metadata?: unknown };
  if (typeof e?.code !== 'number' || !FINAL_STATUS.has(e.code)) return null;
  const details = typeof e.details === 'string' && e.details ? e.details : String(err);
  const exit = e.metadata instanceof grpc.Metadata ? e.metadata.get(EXIT_CODE_KEY)[0] : undefined;
  if (exit === String(EXIT_ABORTED)) return new JobAborted(details);
  if (exit === '0') return new JobFinished(details);
  return new PermanentError(`${details} (gRPC ${grpc.status[e.code]}; not retried)`);
}
