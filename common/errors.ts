// Errors that more than one room raises or catches: the CLI maps them to exit codes, the worker to
// re-registration.
export class RecoverableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RecoverableError';
  }
}

/** The job cannot go on; a supervisor must not restart it (the CLI exits with code 3). */
export class JobAborted extends Error {
  readonly exitCode = 3;
  constructor(message: string) {
    super(message);
    this.name = 'JobAborted';
  }
}

/** gRPC failures (coordinator restarted, barrier rejected) and lost links are survivable. */
export function isRecoverable(err: unknown): boolean {
  return err instanceof RecoverableError || (typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number');
}
