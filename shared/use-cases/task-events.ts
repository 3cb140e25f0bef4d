// Task state changes → execution state. Events may come twice or out of order: an event
// whose version is not newer than the last one applied is ignored, and the transition
// table refuses any move backwards.

import type { Core } from '../core.ts';
import type { Execution, ExecutionResult, ResultManifest } from '../domain/execution.ts';
import { resultKeys } from '../domain/execution.ts';
import { PUBLISHER_CONTAINER } from '../domain/fargate-task.ts';
import { stepsOf } from '../domain/job-spec.ts';
import type { ExecutionState } from '../domain/states.ts';
import { canTransition, isTerminal } from '../domain/states.ts';
import {
  isStepContainer,
  JOB_CONTAINER,
  jobEnded,
  RESULT_NOT_STORED,
  SPOT_RECLAIMED,
  stepContainer,
  type TaskStateChangeDetail,
} from '../domain/task-event.ts';
import { NotFound } from '../errors.ts';
import { amend, moveTo, mutate } from './transitions.ts';

export type TaskEventOutcome = 'applied' | 'ignored';

interface Ending {
  readonly state: ExecutionState;
  readonly exitCode: number | null;
  readonly reason?: string;
}

/** Stop codes with which ECS ends a task whose Fargate Spot capacity was taken back. */
const SPOT_STOP_CODES: ReadonlySet<string> = new Set(['SpotInterruption', 'TerminationNotice']);
/** Stop codes of a task someone stopped (Ferry, an operator, a deployment), not its containers. */
const STOPPED_FROM_OUTSIDE: ReadonlySet<string> = new Set(['UserInitiated', 'ServiceSchedulerInitiated']);

/** Stop codes that say the task ended for a cause of its own, not because Ferry stopped it. */
const NOT_STOPPED_BY_FERRY: ReadonlySet<string> = new Set([
  'EssentialContainerExited',
  'TaskFailedToStart',
  ...SPOT_STOP_CODES,
]);

/**
 * Whether the task ended because its timeout stopped it. A timeout's stop request alone is not
 * enough: a job that ended by itself just as its deadline came (ECS says its essential container
 * exited, or the result says it ended before the request) finished in time, and one that Spot
 * took away was interrupted.
 */
function stoppedForTimeout(
  execution: Execution,
  detail: TaskStateChangeDetail,
  manifest: ResultManifest | undefined,
): boolean {
  if (manifest?.timedOut === true) return true;
  const request = execution.stopRequested;
  if (request?.intent !== 'timeout') return false;
  if (detail.stopCode !== undefined && NOT_STOPPED_BY_FERRY.has(detail.stopCode)) return false;
  return manifest === undefined || Date.parse(manifest.endedAt) >= Date.parse(request.at);
}

/**
 * Whether the event says the job runs. ECS reports a task PENDING while any of its containers
 * still waits to start, so a task whose first step runs while later steps wait for it is PENDING:
 * the job runs once a step's container does.
 */
function jobRunning(detail: TaskStateChangeDetail): boolean {
  if (detail.lastStatus === 'RUNNING') return true;
  return (
    !jobEnded(detail) &&
    (detail.containers ?? []).some((c) => isStepContainer(c.name) && c.lastStatus === 'RUNNING')
  );
}

/**
 * Whether a container's fate decides the job's: a step's container, and with the steps' results
 * at hand, only the step whose failure ended the job (one whose failure was ignored does not).
 */
function judgedBy(execution: Execution, manifest: ResultManifest | undefined, container: string): boolean {
  if (!isStepContainer(container)) return false;
  const results = manifest?.steps;
  if (results === undefined) return true;
  const steps = stepsOf(execution.spec);
  const ended = results.findIndex(
    (result, index) => result.exitCode !== 0 && steps[index]?.ignoreError !== true,
  );
  return ended !== -1 && stepContainer(ended) === container;
}

/** How a stopped task ended, in Ferry's terms. */
export function endingOf(
  execution: Execution,
  detail: TaskStateChangeDetail,
  manifest?: ResultManifest,
  /** Why the stored result could not be read, when it could not. */
  unreadable?: string,
): Ending {
  const container = detail.containers?.find((c) => c.name === JOB_CONTAINER) ?? detail.containers?.[0];
  const exitCode = manifest?.exitCode ?? container?.exitCode ?? null;
  const containerReason = container?.reason ?? '';
  if (containerReason.startsWith(RESULT_NOT_STORED)) {
    // Whatever else happened, the caller cannot see what the job did: that is a failure.
    return { state: 'FAILED', exitCode, reason: containerReason.slice(RESULT_NOT_STORED.length + 2) };
  }
  if (execution.stopRequested?.intent === 'cancel') {
    return { state: 'CANCELLED', exitCode, reason: 'cancelled by the caller' };
  }
  if (stoppedForTimeout(execution, detail, manifest)) {
    return {
      state: 'TIMED_OUT',
      exitCode,
      reason: `exceeded its timeout of ${execution.spec.timeoutSeconds}s`,
    };
  }
  if (detail.stopCode !== undefined && SPOT_STOP_CODES.has(detail.stopCode)) {
    // The job was killed, not finished: its exit code (143 after SIGTERM) says nothing.
    return {
      state: 'FAILED',
      exitCode,
      reason: `${SPOT_RECLAIMED} (${detail.stopCode}): ${detail.stoppedReason ?? 'the task was interrupted'}`,
    };
  }
  const outOfMemory = (detail.containers ?? []).some(
    (c) => judgedBy(execution, manifest, c.name) && /OutOfMemory/i.test(c.reason ?? ''),
  );
  if (outOfMemory || /OutOfMemory/i.test(detail.stoppedReason ?? '')) {
    const limit = execution.bid.constraints?.memoryMiB;
    return {
      state: 'FAILED',
      exitCode,
      reason: `out of memory: the job used more than its ${limit ?? '?'} MiB limit`,
    };
  }
  if (detail.stopCode === 'TaskFailedToStart') {
    return {
      state: 'FAILED',
      exitCode: null,
      reason:
        `the task failed to start: ${detail.stoppedReason ?? containerReason ?? 'no reason given'}`.trim(),
    };
  }
  const notStarted = stepNotStarted(detail);
  if (notStarted !== undefined) {
    return { state: 'FAILED', exitCode: null, reason: notStarted };
  }
  if (manifest?.startError !== undefined) {
    // The command never ran (its inputs could not be had, its program is not there): the job's
    // container may report 143 from a dependency that failed, which is no exit of the job's.
    return { state: 'FAILED', exitCode: null, reason: `the job could not start: ${manifest.startError}` };
  }
  if (
    manifest === undefined &&
    container?.exitCode == null &&
    detail.stopCode !== undefined &&
    STOPPED_FROM_OUTSIDE.has(detail.stopCode)
  ) {
    // Stopped from outside Ferry (an operator's StopTask, a deployment) before anything ran.
    return {
      state: 'FAILED',
      exitCode: null,
      reason: `the task was stopped before the job ran (${detail.stopCode}): ${
        detail.stoppedReason ?? 'no reason given'
      }`,
    };
  }
  const publisher = detail.containers?.find((c) => c.name === PUBLISHER_CONTAINER);
  if (
    manifest === undefined &&
    unreadable === undefined &&
    publisher !== undefined &&
    publisher.exitCode !== 0
  ) {
    // The publisher died before storing anything: whatever the job did, the caller cannot see it.
    const how = publisher.exitCode == null ? 'without an exit code' : `with exit code ${publisher.exitCode}`;
    return {
      state: 'FAILED',
      exitCode,
      reason: `the result was not stored: Ferry's publisher container ended ${how}${
        publisher.reason ? ` (${publisher.reason})` : ''
      }`,
    };
  }
  if (unreadable !== undefined) {
    // The job may have done its work, but the caller cannot see it: that is a failure.
    return { state: 'FAILED', exitCode, reason: `the result could not be read: ${unreadable}` };
  }
  if (exitCode === null) {
    return {
      state: 'FAILED',
      exitCode,
      reason: detail.stoppedReason ?? 'the job ended without an exit code',
    };
  }
  const undelivered = manifest?.outputs.find((output) => output.deliveryError !== undefined);
  if (exitCode === 0 && undelivered !== undefined) {
    // The job did its work, but not all of it reached where the caller said it must go.
    return {
      state: 'FAILED',
      exitCode,
      reason: `output ${undelivered.name} was not delivered: ${undelivered.deliveryError}`,
    };
  }
  return { state: 'COMPLETED', exitCode };
}

interface StoredResult {
  readonly manifest?: ResultManifest;
  /** Why the result could not be read (storage refused or failed): the run then ends FAILED. */
  readonly unreadable?: string;
}

/**
 * The run's result manifest, if it stored one. A read that fails is not thrown: the run must
 * still end, and its capacity be given back, or a lasting fault (a missing grant) would hold
 * both forever.
 */
async function readManifest(core: Core, id: string): Promise<StoredResult> {
  let body: Buffer | undefined;
  try {
    body = await core.objects.get(resultKeys(id).manifest);
  } catch (error) {
    core.log.error('could not read the result manifest', { executionId: id, error });
    return { unreadable: error instanceof Error ? error.message : String(error) };
  }
  if (body === undefined) return {};
  try {
    return { manifest: JSON.parse(body.toString('utf8')) as ResultManifest };
  } catch (error) {
    core.log.warn('unreadable result manifest', { executionId: id, error });
    return {};
  }
}

function resultOf(id: string, manifest: ResultManifest): ExecutionResult {
  const brief = (s: ResultManifest['stdout']) => ({
    totalBytes: s.totalBytes,
    storedBytes: s.storedBytes,
    truncated: s.truncated,
  });
  return {
    review: 'PENDING',
    exitCode: manifest.exitCode,
    manifestKey: resultKeys(id).manifest,
    stdout: brief(manifest.stdout),
    stderr: brief(manifest.stderr),
  };
}

export async function handleTaskStateChange(
  core: Core,
  detail: TaskStateChangeDetail,
): Promise<TaskEventOutcome> {
  const id = detail.startedBy;
  if (id === undefined) return 'ignored';
  const { manifest, unreadable } = jobEnded(detail) ? await readManifest(core, id) : {};
  let applied = false;
  try {
    await mutate(core.store, id, (current) => {
      applied = false;
      if (current.task !== undefined && current.task.id !== detail.taskArn) return undefined; // another task's echo
      if (current.task !== undefined && detail.version <= current.task.lastEventVersion) return undefined;
      if (isTerminal(current.state)) return undefined;
      const now = core.clock.now();
      const task = { id: detail.taskArn, lastEventVersion: detail.version };
      applied = true;
      if (jobRunning(detail)) {
        if (current.state !== 'LAUNCHING') return amend(current, now, { task });
        const startedAt =
          (detail.lastStatus === 'RUNNING' ? detail.startedAt : undefined) ?? now.toISOString();
        return moveTo(current, 'RUNNING', now, {
          task,
          startedAt,
          deadlineAt: new Date(Date.parse(startedAt) + current.spec.timeoutSeconds * 1000).toISOString(),
        });
      }
      if (jobEnded(detail)) {
        const ending = endingOf(current, detail, manifest, unreadable);
        if (!canTransition(current.state, ending.state)) return undefined;
        return moveTo(
          current,
          ending.state,
          now,
          {
            task,
            exitCode: ending.exitCode,
            endedAt: detail.stoppedAt ?? now.toISOString(),
            ...(ending.reason === undefined ? {} : { reason: ending.reason }),
            ...(manifest === undefined ? {} : { result: resultOf(id, manifest) }),
          },
          ending.reason,
        );
      }
      return amend(current, now, { task });
    });
  } catch (error) {
    if (error instanceof NotFound) return 'ignored';
    throw error;
  }
  // Released after the terminal write, and again on a duplicate event: release is idempotent,
  // and the sweeper releases whatever a crash in between left held. Not at DEPROVISIONING:
  // the task still holds what it was given.
  if (detail.lastStatus === 'STOPPED') await core.ledger.release(id);
  const stuck = stepNotStarted(detail);
  if (stuck !== undefined && !jobEnded(detail) && detail.desiredStatus !== 'STOPPED') {
    // The task would wait for that step (its publisher with it) until the job's deadline.
    await core.backend.stop(detail.taskArn, stuck);
  }
  return applied ? 'applied' : 'ignored';
}

/**
 * Why a step's container could not be started (its image could not be pulled, the engine would
 * not start it), when the event says so. A step that ECS did not start because the one before it
 * failed is no such case: that is how a job of steps ends.
 */
function stepNotStarted(detail: TaskStateChangeDetail): string | undefined {
  const container = (detail.containers ?? []).find(
    (c) =>
      isStepContainer(c.name) &&
      c.lastStatus === 'STOPPED' &&
      /^Cannot(Pull|Start|Create)Container/.test(c.reason ?? '') &&
      !/dependency graph|dependency container/i.test(c.reason ?? ''),
  );
  if (container === undefined) return undefined;
  const step = container.name === JOB_CONTAINER ? 1 : Number(container.name.replace(/^job-step/, ''));
  return `step ${step} could not start: ${container.reason}`;
}
