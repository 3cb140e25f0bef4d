// Ferry's one error hierarchy. Every error a caller can see is a FerryError with a stable
// `code` and an HTTP status; anything else is an internal fault whose details stay hidden.

export interface FieldProblem {
  /** Dotted path to the offending field, e.g. `resources.memory` or `command`. */
  readonly field: string;
  readonly message: string;
}

export abstract class FerryError extends Error {
  abstract readonly code: string;
  abstract readonly status: number;
  /** Extra members for the problem document (RFC 9457 extension members). */
  readonly details: Record<string, unknown>;

  constructor(message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.details = options.details ?? {};
  }
}

export class ValidationError extends FerryError {
  readonly code = 'invalid-request';
  readonly status = 400;
  readonly problems: readonly FieldProblem[];

  constructor(message: string, problems: readonly FieldProblem[] = []) {
    super(message, { details: problems.length > 0 ? { errors: problems } : {} });
    this.problems = problems;
  }
}

export class PayloadTooLarge extends FerryError {
  readonly code = 'payload-too-large';
  readonly status = 413;
}

/** The body is in a format the endpoint does not take (it takes JSON). */
export class UnsupportedMediaType extends FerryError {
  readonly code = 'unsupported-media-type';
  readonly status = 415;
}

export class Unauthorized extends FerryError {
  readonly code = 'unauthorized';
  readonly status = 401;
  /**
   * The `WWW-Authenticate` challenge every 401 carries (RFC 9110 §11.6.1). Set by whoever
   * raises it: only the runtime knows the scheme its callers authenticate with.
   */
  readonly challenge: string;

  constructor(message: string, options: { challenge: string }) {
    super(message);
    this.challenge = options.challenge;
  }
}

/**
 * The request is understood but refused: it comes from a page or a name the server does not
 * serve, or it shows no right to what it asks (an upload secret that is not the execution's).
 */
export class Forbidden extends FerryError {
  readonly code = 'forbidden';
  readonly status = 403;
}

/** The request target is longer than the server reads. */
export class UriTooLong extends FerryError {
  readonly code = 'uri-too-long';
  readonly status = 414;
}

export class NotFound extends FerryError {
  readonly code = 'not-found';
  readonly status = 404;
}

export class MethodNotAllowed extends FerryError {
  readonly code = 'method-not-allowed';
  readonly status = 405;
}

/** The execution is in a state where the requested action makes no sense. */
export class InvalidTransition extends FerryError {
  readonly code = 'invalid-state';
  readonly status = 409;
}

/**
 * A conditional write lost a race: the execution changed between read and write.
 * Use cases re-read and decide again; callers only see it if retries run out.
 */
export class StaleExecution extends FerryError {
  readonly code = 'stale-execution';
  readonly status = 409;
}

/** An Idempotency-Key was reused with a different request. */
export class IdempotencyConflict extends FerryError {
  readonly code = 'idempotency-key-reused';
  readonly status = 422;
}

/** Ferry would not bid on the job (returned by the ask-and-accept shortcut). */
export class BidDeclined extends FerryError {
  readonly code = 'bid-declined';
  readonly status = 422;
}

/** Ferry would not bid on a task sent through the TES API, which answers that with 400. */
export class TaskDeclined extends FerryError {
  readonly code = 'bid-declined';
  readonly status = 400;
}

/** The compute backend could not do what was asked; `retryable` says whether a later try may work. */
export class BackendError extends FerryError {
  readonly code = 'backend-error';
  readonly status = 502;
  readonly retryable: boolean;

  constructor(message: string, options: { cause?: unknown; retryable: boolean }) {
    super(message, { cause: options.cause });
    this.retryable = options.retryable;
  }
}

/**
 * The API a proxy forwards to did not answer as an API should: it is unreachable, or it refused
 * the credentials the proxy signs with (which the caller of the proxy cannot mend).
 */
export class UpstreamFailed extends FerryError {
  readonly code = 'upstream-failed';
  readonly status = 502;
}

/**
 * An error the API behind a proxy answered that is not one of Ferry's (API Gateway's own
 * throttling, timeouts and limits), passed on with its status and its retry hint.
 */
export class UpstreamAnswer extends FerryError {
  readonly code = 'upstream-answer';
  constructor(
    readonly status: number,
    message: string,
    /** The `Retry-After` it came with, if any. */
    readonly retryAfter?: string,
  ) {
    super(message);
  }
}

/** The request line and headers together are longer than the server reads. */
export class HeadersTooLarge extends FerryError {
  readonly code = 'headers-too-large';
  readonly status = 431;
}

/** The server cannot start as configured; the message names the setting to change. */
export class StartupError extends FerryError {
  readonly code = 'cannot-start';
  readonly status = 503;
}

/** Ferry's own storage cannot take the write (a read-only or full disk); nothing was changed. */
export class StorageUnavailable extends FerryError {
  readonly code = 'storage-unavailable';
  readonly status = 503;
}

/**
 * Ferry's own storage refused a read. On S3 that is also how a missing key answers a role
 * without s3:ListBucket, so the message names the grant a deployment needs.
 */
export class StorageAccessDenied extends FerryError {
  readonly code = 'storage-access-denied';
  readonly status = 503;
}

export const isFerryError = (error: unknown): error is FerryError => error instanceof FerryError;
