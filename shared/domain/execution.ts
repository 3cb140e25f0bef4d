// The execution record: one job's bid, its life through the states, and its result.
import type { JobSpec } from './job-spec.ts';
import type { ExecutionState } from './states.ts';

export type Platform = 'fargate' | 'docker' | 'process';

/** What the job will actually get: the request rounded to what the platform offers. */
export interface ResolvedConstraints {
  readonly platform: Platform;
  readonly cpu: number;
  readonly memoryMiB: number;
  readonly diskGiB: number;
  /** The Fargate task size strings for RunTask, when the platform is Fargate. */
  readonly fargate?: { readonly cpu: string; readonly memory: string; readonly ephemeralStorageGiB: number };
  /** Limits the platform does not enforce, said plainly. */
  readonly notes: readonly string[];
}

export interface Estimate {
  /** On-demand Fargate price of this size, USD per hour (the local backends quote the same for comparison). */
  readonly costPerHourUsd: number;
  /** The price if the job runs until its timeout. */
  readonly maxCostUsd: number;
  /**
   * Expected wait before launch given what runs and waits now, an estimate: each running job is
   * expected to run about as long again as it has so far, and no longer than its timeout. 0 when
   * it fits at once.
   */
  readonly queueWaitSeconds: number;
  /** The longest the wait can be while the jobs ahead use their whole timeouts (absent in older bids). */
  readonly queueWaitAtMostSeconds?: number;
  readonly queue: { readonly runningJobs: number; readonly queuedJobs: number };
}

export interface Bid {
  readonly accepted: boolean;
  /** Why Ferry bid as it did; for a decline it names what was asked and what is possible. */
  readonly reason: string;
  readonly constraints?: ResolvedConstraints;
  readonly estimate?: Estimate;
  readonly expiresAt?: string;
}

export type StopIntent = 'cancel' | 'timeout';

export interface StreamResult {
  readonly totalBytes: number;
  readonly storedBytes: number;
  readonly truncated: boolean;
  readonly headBytes: number;
  readonly tailBytes: number;
  readonly omittedBytes: number;
  readonly inline: string;
  readonly inlineEncoding: 'utf8' | 'base64';
  readonly inlineTruncated: boolean;
  /** SHA-256 (hex) of the stored bytes (absent in results stored before digests were kept). */
  readonly sha256?: string;
}

/** A file of a DIRECTORY output, as stored. */
export interface OutputEntry {
  /** Relative to the output. */
  readonly path: string;
  readonly bytes: number;
  readonly sha256: string;
}

/** What was left out of an output, and why. */
export interface SkippedEntry {
  /** Relative to the output ('' for the output itself). */
  readonly path: string;
  readonly bytes?: number;
  readonly reason: string;
}

/** One output as stored, in the manifest. */
export interface OutputResult {
  readonly name: string;
  /** Its path in the container. */
  readonly path: string;
  readonly type: 'FILE' | 'DIRECTORY';
  /** The object (FILE), or the prefix its files are under (DIRECTORY, ending in "/"). */
  readonly key: string;
  /** Bytes stored. */
  readonly bytes: number;
  /** Bytes the job left there, in plain files. */
  readonly totalBytes: number;
  /** Files stored. */
  readonly files: number;
  /** Something the job left was not stored in full: cut, or skipped. */
  readonly truncated: boolean;
  /** Nothing was at the path when the command had exited. */
  readonly missing?: boolean;
  /** SHA-256 (hex) of the stored bytes of a FILE output. */
  readonly sha256?: string;
  /** Every file stored of a DIRECTORY output, in path order. */
  readonly entries?: readonly OutputEntry[];
  /** What was not stored and why (the first 100). */
  readonly skipped?: readonly SkippedEntry[];
  /** How many were not stored, listed or not. */
  readonly skippedCount?: number;
  /** The url it was delivered to, once stored (the output's `url`). */
  readonly deliveredTo?: string;
  /** Why it could not be delivered to its url. */
  readonly deliveryError?: string;
}

export type ReviewState = 'PENDING' | 'ACCEPTED' | 'REJECTED';

/** The manifest written last as `executions/{id}/result.json`. */
/** How one step of a job with several ended, in the manifest. */
export interface StepResult {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly startedAt: string | null;
  readonly endedAt: string;
  /** Where its output starts in the job's stdout and stderr (byte positions in each stream). */
  readonly stdoutFrom: number;
  readonly stderrFrom: number;
  /** Why it never ran its command (no such program, a working directory it could not enter). */
  readonly startError?: string;
}

export interface ResultManifest {
  readonly executionId: string;
  readonly exitCode: number | null;
  readonly signal: string | null;
  /** True when the run was stopped (cancel, timeout) or recovered and output may be incomplete. */
  readonly partial: boolean;
  /** The job ran out of time and was stopped inside its task (Fargate's wrapper). */
  readonly timedOut?: boolean;
  /** Why the command never ran (an input that could not be had, a program that is not there). */
  readonly startError?: string;
  readonly startedAt: string | null;
  readonly endedAt: string;
  readonly stdout: StreamResult;
  readonly stderr: StreamResult;
  readonly outputs: readonly OutputResult[];
  readonly keep: 'head' | 'tail' | 'head+tail';
  /**
   * A job with steps: each step that ran, in order (the ones after a failure never run). The
   * job's exit code is that of the step that failed it, else 0.
   */
  readonly steps?: readonly StepResult[];
}

export interface ExecutionResult {
  readonly review: ReviewState;
  readonly exitCode: number | null;
  readonly manifestKey: string;
  readonly stdout: Pick<StreamResult, 'totalBytes' | 'storedBytes' | 'truncated'>;
  readonly stderr: Pick<StreamResult, 'totalBytes' | 'storedBytes' | 'truncated'>;
  readonly reviewedAt?: string;
  /** The caller's words when reviewing. */
  readonly justification?: string;
  readonly publishedTo?: string;
}

export interface HistoryEntry {
  readonly state: ExecutionState;
  readonly at: string;
  readonly reason?: string;
  /** Set on the entry recording the caller's review of the result (the state stays as it was). */
  readonly review?: 'ACCEPTED' | 'REJECTED';
  /** The caller's words for a decision (rejecting a bid, reviewing a result). */
  readonly justification?: string;
}

export interface LaunchAttempt {
  readonly at: string;
  /** SHA-256 (hex) of the upload secret handed to this attempt's task. */
  readonly uploadSecretDigest: string;
}

export interface Execution {
  readonly id: string;
  readonly owner: string;
  readonly state: ExecutionState;
  /** Bumped by every write; writes are conditional on the version read. */
  readonly version: number;
  readonly spec: JobSpec;
  readonly bid: Bid;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly queuedAt?: string;
  readonly launchedAt?: string;
  readonly startedAt?: string;
  readonly endedAt?: string;
  /** When the run must end; set at launch from the job's timeout. */
  readonly deadlineAt?: string;
  readonly task?: {
    readonly id: string;
    readonly lastEventVersion: number;
    /** When the sweeper first found the task STOPPED with no stop event applied. */
    readonly stopSeenAt?: string;
  };
  readonly stopRequested?: { readonly intent: StopIntent; readonly at: string };
  /** Names the one live chain of dispatch messages; see DispatchMessage.token. */
  readonly dispatchToken?: string;
  /** Launch attempts deferred for capacity or retryable errors. */
  readonly deferrals: number;
  /**
   * Every launch attempt, oldest first, with the digest of the upload secret its task was
   * given (the secret itself is never stored). A task of any attempt may be the one that runs
   * (a RunTask whose reply was lost may have started it), so each digest stays valid.
   */
  readonly launches?: readonly LaunchAttempt[];
  /**
   * A digest of the request that created the execution when it carried an Idempotency-Key:
   * a retry of that request finds this record again; another request with the key is refused.
   */
  readonly requestFingerprint?: string;
  readonly exitCode?: number | null;
  readonly reason?: string;
  readonly result?: ExecutionResult;
  readonly history: readonly HistoryEntry[];
}

export const resultKeys = (id: string) => ({
  prefix: `executions/${id}/`,
  stdout: `executions/${id}/stdout`,
  stderr: `executions/${id}/stderr`,
  manifest: `executions/${id}/result.json`,
  output: (name: string) => `executions/${id}/outputs/${name}`,
});
