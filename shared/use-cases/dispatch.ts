// Dispatch: turn a queue message into a launched task, or leave the job queued until
// capacity frees. Safe under at-least-once delivery: only a QUEUED execution is moved to
// LAUNCHING (conditionally), and a relaunch of a LAUNCHING one reuses the same task. Each
// launch attempt mints an upload secret for its task and records the secret's digest first.

import type { Core } from '../core.ts';
import { decideLaunch } from '../domain/capacity.ts';
import type { Execution, LaunchAttempt } from '../domain/execution.ts';
import { isTerminal } from '../domain/states.ts';
import { mintUploadSecret, uploadSecretDigest } from '../domain/upload-links.ts';
import { BackendError, StaleExecution } from '../errors.ts';
import type { DispatchMessage } from '../ports.ts';
import { amend, moveTo, mutate } from './transitions.ts';
import { demandOf, launchUsage } from './usage.ts';

export type DispatchOutcome =
  | { readonly outcome: 'launched'; readonly taskId: string }
  | { readonly outcome: 'deferred'; readonly reason: string }
  | { readonly outcome: 'failed'; readonly reason: string }
  | { readonly outcome: 'dropped'; readonly reason: string };

export async function dispatch(core: Core, message: DispatchMessage): Promise<DispatchOutcome> {
  const execution = await core.store.get(message.executionId);
  if (execution === undefined) return { outcome: 'dropped', reason: 'no such execution' };
  if (
    message.token !== undefined &&
    execution.dispatchToken !== undefined &&
    message.token !== execution.dispatchToken
  ) {
    return { outcome: 'dropped', reason: 'superseded by a newer dispatch message' };
  }
  if (execution.state === 'LAUNCHING' && execution.task === undefined) return relaunch(core, execution);
  if (execution.state !== 'QUEUED') {
    // A duplicate delivery, or a job cancelled while its message waited.
    return { outcome: 'dropped', reason: `execution is ${execution.state}` };
  }

  const now = core.clock.now();
  const usage = await launchUsage(core);
  const decision = decideLaunch(demandOf(execution), usage, core.settings.capacity, now);
  if (!decision.launch) {
    await core.queue.send(messageFor(execution), { delaySeconds: core.settings.deferSeconds });
    return { outcome: 'deferred', reason: decision.reason };
  }

  // The listing above may lag behind other dispatchers; the ledger is the hard budget.
  const demand = demandOf(execution);
  if (!(await core.ledger.reserve(execution.id, demand, core.settings.capacity))) {
    await core.queue.send(messageFor(execution), { delaySeconds: core.settings.deferSeconds });
    return { outcome: 'deferred', reason: 'the capacity budget is taken by jobs launched meanwhile' };
  }

  const attempt = newAttempt(now);
  const launching = moveTo(execution, 'LAUNCHING', now, {
    launchedAt: now.toISOString(),
    launches: [...(execution.launches ?? []), attempt.record],
  });
  try {
    await core.store.update(launching, execution);
  } catch (error) {
    await core.ledger.release(execution.id);
    // Another dispatcher or a cancel got there first; whoever won decides.
    if (error instanceof StaleExecution) return { outcome: 'dropped', reason: 'execution changed meanwhile' };
    throw error;
  }
  return launch(core, launching, attempt.secret);
}

/** A launch attempt: the secret for its task, and what the record keeps of it. */
function newAttempt(now: Date): { secret: string; record: LaunchAttempt } {
  const secret = mintUploadSecret();
  return { secret, record: { at: now.toISOString(), uploadSecretDigest: uploadSecretDigest(secret) } };
}

/**
 * A LAUNCHING execution without a task: an earlier attempt failed and is retried, or its
 * dispatcher died. The new attempt's digest is recorded before its task can exist; the
 * backend reuses a task an earlier attempt started, whose own digest stays valid.
 */
async function relaunch(core: Core, execution: Execution): Promise<DispatchOutcome> {
  const attempt = newAttempt(core.clock.now());
  const claimed = await mutate(
    core.store,
    execution.id,
    (current) =>
      current.state === 'LAUNCHING' && current.task === undefined
        ? amend(current, core.clock.now(), { launches: [...(current.launches ?? []), attempt.record] })
        : undefined,
    8,
    execution,
  );
  if (claimed.launches?.at(-1)?.uploadSecretDigest !== attempt.record.uploadSecretDigest) {
    return {
      outcome: 'dropped',
      reason: `execution is ${claimed.state}${claimed.task ? ' with a task' : ''}`,
    };
  }
  return launch(core, claimed, attempt.secret);
}

/** The next message of the execution's one live chain. */
export const messageFor = (execution: Execution): DispatchMessage => ({
  executionId: execution.id,
  ...(execution.dispatchToken === undefined ? {} : { token: execution.dispatchToken }),
});

async function launch(core: Core, execution: Execution, uploadSecret: string): Promise<DispatchOutcome> {
  const constraints = execution.bid.constraints;
  if (constraints === undefined) return fail(core, execution, 'the bid has no resolved constraints');
  let taskId: string;
  try {
    ({ taskId } = await core.backend.launch(execution, constraints, { uploadSecret }));
  } catch (error) {
    if (
      error instanceof BackendError &&
      error.retryable &&
      execution.deferrals + 1 < core.settings.maxLaunchAttempts
    ) {
      const deferred = await mutate(core.store, execution.id, (current) =>
        current.state === 'LAUNCHING'
          ? amend(current, core.clock.now(), { deferrals: current.deferrals + 1 })
          : undefined,
      );
      const backoff = Math.min(core.settings.deferSeconds * 2 ** deferred.deferrals, 300);
      await core.queue.send(messageFor(execution), { delaySeconds: backoff });
      core.log.warn('launch failed, will retry', { executionId: execution.id, error, backoff });
      return { outcome: 'deferred', reason: error.message };
    }
    const reason = error instanceof Error ? error.message : String(error);
    core.log.warn('launch failed', { executionId: execution.id, error });
    return fail(core, execution, `launch failed: ${reason}`);
  }

  const recorded = await mutate(
    core.store,
    execution.id,
    (current) => {
      const now = core.clock.now();
      // Counted from the start when the task's events already told it, else from now with
      // the grace a launch may take; a RUNNING event later counts it from the start again.
      const deadlineAt = new Date(
        current.startedAt === undefined
          ? now.getTime() + (current.spec.timeoutSeconds + core.settings.launchGraceSeconds) * 1000
          : Date.parse(current.startedAt) + current.spec.timeoutSeconds * 1000,
      ).toISOString();
      if (current.task !== undefined) {
        // The task's own events got here first; one that did not set the deadline (an early
        // PENDING) leaves it to this write, or the run would have none.
        return current.deadlineAt === undefined && !isTerminal(current.state)
          ? amend(current, now, { deadlineAt })
          : undefined;
      }
      return amend(current, now, { task: { id: taskId, lastEventVersion: 0 }, deadlineAt });
    },
    8,
    // Usually what this dispatcher just wrote; if anything changed since, it reads again.
    execution,
  );
  if (recorded.stopRequested !== undefined) {
    // Cancelled while the launch was in flight: the task must not outlive the request.
    await core.backend.stop(
      taskId,
      recorded.stopRequested.intent === 'cancel' ? 'cancelled by the caller' : 'timed out',
    );
  }
  return { outcome: 'launched', taskId };
}

async function fail(core: Core, execution: Execution, reason: string): Promise<DispatchOutcome> {
  const failed = await mutate(core.store, execution.id, (current) => {
    if (current.state !== 'QUEUED' && current.state !== 'LAUNCHING') return undefined;
    const now = core.clock.now();
    return moveTo(current, 'FAILED', now, { reason, endedAt: now.toISOString() }, reason);
  });
  if (isTerminal(failed.state)) await core.ledger.release(execution.id);
  return { outcome: 'failed', reason };
}
