// Which failures end a job and which are retried, as gRPC statuses (part of the wire contract). A
// transient rejection (a barrier of an old assignment, a coordinator that is re-assigning) is ABORTED:
// the worker registers again. A request that can never succeed (more workers than blocks, a partition
// that does not fit, a model or config that does not match) is FAILED_PRECONDITION, and a wrong token
// an access status: the worker stops at once with the message (common/errors.ts: PermanentError, exit 4).
import * as grpc from '@grpc/grpc-js';
import { PermanentError } from '../common/errors.ts';

const PERMANENT_STATUS = new Set<number>([grpc.status.FAILED_PRECONDITION, grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED]);

/** The status a coordinator answers an error with. */
export function statusOf(err: Error): grpc.status {
  return err instanceof PermanentError ? grpc.status.FAILED_PRECONDITION : grpc.status.ABORTED;
}

/** A gRPC error that retrying cannot fix, turned into a PermanentError carrying the server's message. */
export function permanentFromStatus(err: unknown): PermanentError | null {
  const e = err as { code?: unknown; details?: unknown };
  if (typeof e?.code !== 'number' || !PERMANENT_STATUS.has(e.code)) return null;
  return new PermanentError(`${typeof e.details === 'string' && e.details ? e.details : String(err)} (gRPC ${grpc.status[e.code]}; not retried)`);
}
