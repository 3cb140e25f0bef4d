// What every use case is given: the ports, and the settings that shape decisions.
// Each runtime builds one Core at start (see shared/runtime/).
import type { BidPolicy, PlatformProfile } from './domain/bidding.ts';
import type { CapacityLimits } from './domain/capacity.ts';
import type { Logger } from './logger.ts';
import type {
  CapacityLedger,
  Clock,
  ComputeBackend,
  ExecutionStore,
  IdempotencyStore,
  IdGenerator,
  InputFetcher,
  JobIntake,
  JobQueue,
  NodeHistory,
  ObjectStore,
  UploadSigner,
} from './ports.ts';

export interface CoreSettings {
  readonly policy: BidPolicy;
  readonly profile: PlatformProfile;
  readonly capacity: CapacityLimits;
  readonly bidTtlSeconds: number;
  /** How long a job that does not fit waits before the dispatcher looks again. */
  readonly deferSeconds: number;
  /** Retryable launch failures after which the execution fails. */
  readonly maxLaunchAttempts: number;
  readonly resultLinkSeconds: number;
  /** How long an upload link signed for a task's publisher stays usable. */
  readonly uploadLinkSeconds: number;
  /** The longest a single wait or follow request may hold (API Gateway allows 29 s). */
  readonly maxWaitSeconds: number;
  /** A LAUNCHING job whose task never showed up this long is re-dispatched. */
  readonly launchGraceSeconds: number;
  /** A QUEUED job not dispatched this long gets a fresh queue message (the old one may be dead-lettered). */
  readonly requeueAfterSeconds: number;
  readonly version: string;
}

/** Wakes waiters when an execution changes; runtimes without push notifications poll. */
export interface ChangeFeed {
  /** Resolves when `id` changes or after `timeoutMs`, whichever comes first. */
  waitForChange(id: string, timeoutMs: number): Promise<void>;
}

export interface Core {
  readonly store: ExecutionStore;
  readonly idempotency: IdempotencyStore;
  readonly queue: JobQueue;
  readonly intake: JobIntake;
  readonly objects: ObjectStore;
  /**
   * Where tasks store results through links Ferry signs (on AWS); absent where the backend
   * writes results itself, and then no upload link is ever handed out.
   */
  readonly uploads?: UploadSigner;
  readonly backend: ComputeBackend;
  /** Where the sweeper keeps what ran and waited over the last hours (the dashboard's chart). */
  readonly history?: NodeHistory;
  /** Looks at input sources for bids (their sizes); absent where inputs are not served. */
  readonly inputs?: InputFetcher;
  readonly ledger: CapacityLedger;
  readonly changes: ChangeFeed;
  readonly clock: Clock;
  readonly ids: IdGenerator;
  readonly log: Logger;
  readonly settings: CoreSettings;
}
