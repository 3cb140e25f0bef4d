// The ports: what the core needs from the world. Adapters for AWS and for one machine
// implement them; use cases depend on nothing else.
import type { Readable } from 'node:stream';
import type { InputSize } from './domain/bidding.ts';
import type { Execution, Platform, ResolvedConstraints } from './domain/execution.ts';
import type { JobInput } from './domain/job-spec.ts';
import type { ExecutionState } from './domain/states.ts';
import type { TaskStateChangeDetail } from './domain/task-event.ts';
import type { SignedLink, UploadLinkRequest } from './domain/upload-links.ts';

export interface Page<T> {
  readonly items: readonly T[];
  /** Opaque; absent on the last page. */
  readonly nextCursor?: string;
}

export interface ListQuery {
  readonly owner?: string;
  readonly states?: readonly ExecutionState[];
  /** Only executions carrying every one of these labels, with these values. */
  readonly labels?: Readonly<Record<string, string>>;
  /** Only executions carrying each of these labels, whatever its value. */
  readonly labelKeys?: readonly string[];
  /** Only executions of this image, as the spec names it. */
  readonly image?: string;
  /** Only executions whose name (spec.name) starts with this. */
  readonly namePrefix?: string;
  readonly limit: number;
  readonly cursor?: string;
}

export interface ExecutionStore {
  /** Creates a new record; fails if the id exists. */
  create(execution: Execution): Promise<void>;
  get(id: string): Promise<Execution | undefined>;
  /**
   * Replaces the record only if it is still as `read` saw it (its version, and so its state);
   * otherwise throws StaleExecution and writes nothing. The state read says whether the write
   * moves the execution into or out of the queue, which the queue's length follows.
   */
  update(next: Execution, read: StoredVersion): Promise<void>;
  /** Newest first. Throws ValidationError for a cursor it did not issue. */
  list(query: ListQuery): Promise<Page<Execution>>;
  /**
   * How many of one caller's executions are in each state. A store that must read to count
   * stops at `cap` in a state and names that state in `atLeast`.
   */
  countByState(owner: string, cap: number): Promise<StateCounts>;
  /** Removes the record only if it is still as `read` saw it; otherwise throws StaleExecution. */
  delete(id: string, read: StoredVersion): Promise<void>;
  /**
   * The head of the queue, read so its cost does not grow with the queue: up to `limit`
   * QUEUED executions by priority (highest first) then queue time (oldest first) and the
   * oldest QUEUED execution, through indexes, and how many are QUEUED, from a count kept in
   * the same transaction as every write that moves an execution into or out of QUEUED.
   */
  queueHead(limit: number): Promise<QueueHead>;
  /**
   * How many QUEUED executions come before `execution` in the order the dispatcher considers
   * them (priority, then queue time, then id), counting at most `cap` of them: its cost grows
   * with the answer, never past the cap.
   */
  queuedAhead(execution: Execution, cap: number): Promise<number>;
}

/** What ran and waited on the node at one moment. */
export interface NodeSample {
  readonly at: string;
  readonly runningJobs: number;
  readonly queuedJobs: number;
}

/**
 * The node's recent past, for a chart: the sweeper records a sample each time it runs (one per
 * minute is kept), and the last hours are read back oldest first.
 */
export interface NodeHistory {
  record(sample: NodeSample): Promise<void>;
  since(since: Date): Promise<readonly NodeSample[]>;
}

export interface StateCounts {
  /** Every state, 0 where there are none. */
  readonly counts: Readonly<Record<ExecutionState, number>>;
  /** States whose count stopped at the cap: there are at least that many. */
  readonly atLeast: readonly ExecutionState[];
}

/** What a conditional write expects to find stored. */
export type StoredVersion = Pick<Execution, 'version' | 'state'>;

export interface QueueHead {
  readonly first: readonly Execution[];
  readonly oldest?: Execution;
  readonly length: number;
}

export interface IdempotencyRecord {
  readonly fingerprint: string;
  readonly state: 'IN_PROGRESS' | 'COMPLETED';
  readonly response?: {
    readonly statusCode: number;
    readonly body: string;
    readonly headers: Record<string, string>;
  };
  readonly expiresAt: string;
}

export interface IdempotencyStore {
  /** Claims `key` for a request; returns the existing record instead if the key is taken and not expired. */
  claim(key: string, record: IdempotencyRecord): Promise<IdempotencyRecord | undefined>;
  complete(key: string, record: IdempotencyRecord): Promise<void>;
  release(key: string): Promise<void>;
}

export interface DispatchMessage {
  readonly executionId: string;
  /**
   * The execution's current dispatch token. A message with an older token was superseded
   * (the sweeper re-sent it) and is dropped, so copies never multiply.
   */
  readonly token?: string;
}

export interface JobQueue {
  send(message: DispatchMessage, options?: { delaySeconds?: number }): Promise<void>;
}

/** Puts a new job on the queue: its QUEUED record and the first message of its dispatch chain. */
export interface JobIntake {
  /**
   * Stores `execution` (new) and sends `message` for it; resolves only once both are done.
   * Fails like ExecutionStore.create, sending nothing, if the id exists. Where the store and
   * the queue share a transaction a failure leaves neither; where they cannot, a failed send
   * may leave the record QUEUED without a message, for the caller to end.
   */
  enqueueNew(execution: Execution, message: DispatchMessage): Promise<void>;
}

export interface ObjectInfo {
  readonly key: string;
  readonly size: number;
}

export interface ObjectStore {
  put(key: string, body: Buffer | string | Readable, contentType?: string): Promise<void>;
  get(key: string): Promise<Buffer | undefined>;
  /** Bytes [start, end) of an object, or undefined if it does not exist. */
  getRange(key: string, start: number, end: number): Promise<Buffer | undefined>;
  head(key: string): Promise<ObjectInfo | undefined>;
  list(prefix: string): Promise<readonly ObjectInfo[]>;
  deletePrefix(prefix: string): Promise<void>;
  /** Removes one object; removing one that is not there is not an error. */
  delete(key: string): Promise<void>;
  copy(sourceKey: string, destination: string): Promise<void>;
  /** Writes a small object at a publish destination (`s3://bucket/key`), as `copy` does. */
  putAt(destination: string, body: string, contentType: string): Promise<void>;
  /** A link that downloads the object without further credentials, valid for `expiresSeconds`. */
  downloadUrl(key: string, expiresSeconds: number): Promise<string>;
}

/**
 * What a run's result is stored through: whole objects (streamed when large) and the removal
 * of single keys. Any ObjectStore is one; so is the publisher's store that works through
 * upload links, which can neither read nor list.
 */
export type ResultSink = Pick<ObjectStore, 'put' | 'delete'> & {
  /**
   * A hint that these keys are put next, each in one piece or in parts: a store that asks for
   * permission per key may ask for all of them at once.
   */
  expect?(keys: readonly string[]): Promise<void>;
};

/** An S3-compatible store inputs are read from, through the caller's usual credentials. */
export interface S3Source {
  /** The object's size, or undefined when there is no such object. */
  head(bucket: string, key: string): Promise<number | undefined>;
  /** Objects under the prefix, a page at a time, in key order. */
  list(bucket: string, prefix: string): AsyncIterable<{ readonly key: string; readonly bytes: number }>;
  /** The object's bytes. */
  open(bucket: string, key: string, signal?: AbortSignal): Promise<Readable>;
}

/** Where a job's inputs come from: looked at for the bid, fetched before the command runs. */
export interface InputFetcher {
  /** Its size when cheap to tell (one HEAD, or one page of a listing); never throws. */
  probe(input: JobInput): Promise<InputSize>;
  /**
   * Writes the input at `destination` (a file, or a directory holding the objects under an
   * s3 prefix), at most `maxBytes` in all; throws a FetchFailed naming the source otherwise.
   */
  fetch(
    input: JobInput,
    destination: string,
    options: { readonly maxBytes: number; readonly signal?: AbortSignal },
  ): Promise<{ readonly bytes: number; readonly files: number }>;
}

/** Signs links that let a task's publisher write its result without permissions of its own. */
export interface UploadSigner {
  /** A link that does `request` on the results store, valid for `expiresSeconds`. */
  sign(request: UploadLinkRequest, expiresSeconds: number): Promise<SignedLink>;
}

/**
 * A task's view as the backend reports it, in the words of ECS. A STOPPED task carries how it
 * stopped, as far as the backend knows, so a lost stop event can be made up from it.
 */
export interface TaskStatus
  extends Partial<Pick<TaskStateChangeDetail, 'stopCode' | 'stoppedReason' | 'stoppedAt' | 'containers'>> {
  readonly taskId: string;
  readonly executionId: string;
  readonly lastStatus: 'PROVISIONING' | 'PENDING' | 'RUNNING' | 'STOPPED' | 'MISSING';
}

export interface LiveRead {
  readonly data: Buffer;
  readonly nextOffset: number;
  readonly skippedBytes: number;
}

/** What one launch attempt hands the task beyond the execution itself. */
export interface LaunchTicket {
  /**
   * This attempt's upload secret (its digest is on the execution's record). A backend whose
   * tasks store results through upload links gives it to the task's publisher and nothing else.
   */
  readonly uploadSecret: string;
}

export interface ComputeBackend {
  readonly platform: Platform;
  /**
   * Starts the job. Resolves with the task id once the backend has accepted it.
   * Throws BackendError; `retryable` says whether the dispatcher should try again later.
   */
  launch(
    execution: Execution,
    constraints: ResolvedConstraints,
    ticket: LaunchTicket,
  ): Promise<{ taskId: string }>;
  /** Asks the task to stop; idempotent, and a no-op for a task that is gone. */
  stop(taskId: string, reason: string): Promise<void>;
  /** Current status of tasks; `MISSING` for ones the backend no longer knows. */
  describe(taskIds: readonly string[]): Promise<readonly TaskStatus[]>;
  /** Output of a task still running, by stream position; undefined when the backend has none live. */
  readLive(
    taskId: string,
    stream: 'stdout' | 'stderr',
    offset: number,
    maxBytes: number,
  ): Promise<LiveRead | undefined>;
}

export interface CapacityDemand {
  readonly cpu: number;
  readonly memoryMiB: number;
}

export interface CapacityBudget {
  readonly maxConcurrency: number;
  readonly maxCpu: number;
  readonly maxMemoryMiB: number;
}

/**
 * The hard budget shared by every dispatcher: a reservation per execution, taken only if
 * the total stays within the budget, and released exactly once.
 */
export interface CapacityLedger {
  /** True if the execution now holds (or already held) a reservation; false if it would exceed the budget. */
  reserve(executionId: string, demand: CapacityDemand, budget: CapacityBudget): Promise<boolean>;
  /** Gives the reservation back; releasing twice, or what was never reserved, does nothing. */
  release(executionId: string): Promise<void>;
  /** Executions holding a reservation, for reconciliation. */
  holders(): Promise<readonly string[]>;
  /** What all reservations hold together, read at once however many there are. */
  totals(): Promise<{ readonly cpu: number; readonly memoryMiB: number; readonly tasks: number }>;
}

export interface Clock {
  now(): Date;
}

export interface IdGenerator {
  next(): string;
  /** The id for a request identified by `key`: the same key always gives the same id. */
  fromKey(key: string): string;
}
