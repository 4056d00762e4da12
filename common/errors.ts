// Errors that more than one room raises or catches: the CLI maps them to exit codes, the worker to
// re-registration.
export class RecoverableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RecoverableError';
  }
}

/** Exit code of a job aborted while it ran (repeated non-finite losses): do not restart it. */
export const EXIT_ABORTED = 3;
/** Exit code of a job that cannot run as configured (more workers than blocks, a model that does not match). */
export const EXIT_PERMANENT = 4;
/** Exit codes after which restarting the process cannot help (2: a usage error). */
export const FINAL_EXIT_CODES: readonly number[] = [0, 2, EXIT_ABORTED, EXIT_PERMANENT];

/** The job cannot go on; a supervisor must not restart it (the CLI exits with code 3). */
export class JobAborted extends Error {
  readonly exitCode = EXIT_ABORTED;
  constructor(message: string) {
    super(message);
    this.name = 'JobAborted';
  }
}

/** The job can never run as configured: retrying the same request would fail the same way (exit 4). */
export class PermanentError extends Error {
  readonly exitCode = EXIT_PERMANENT;
  constructor(message: string) {
    super(message);
    this.name = 'PermanentError';
  }
}

/** The job this process came for is already over (it finished): nothing to do, and not an error (exit 0). */
export class JobFinished extends Error {
  readonly exitCode = 0;
  constructor(message: string) {
    super(message);
    this.name = 'JobFinished';
  }
}

/** gRPC failures (coordinator restarted, barrier rejected) and lost links are survivable. */
export function isRecoverable(err: unknown): boolean {
  return err instanceof RecoverableError || (typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number');
}
