// The sweeper: the periodic pass that keeps promises no single event can keep —
// deadlines are enforced, stale offers expire, lost tasks are found, lost messages re-sent.

import type { Core } from '../core.ts';
import type { Execution } from '../domain/execution.ts';
import { ACTIVE_STATES, isTerminal } from '../domain/states.ts';
import type { TaskStatus } from '../ports.ts';
import { messageFor } from './dispatch.ts';
import { handleTaskStateChange } from './task-events.ts';
import { amend, moveTo, mutate } from './transitions.ts';
import { listAll } from './usage.ts';

/** A stop request not answered by a stop event this long is sent again. */
const STOP_RETRY_SECONDS = 30;

/**
 * A task the backend reports STOPPED whose stop event is still not applied this long after a
 * pass first saw it (so, on the next pass at the earliest) is ended from the backend's account.
 */
export const STOP_EVENT_GRACE_SECONDS = 30;

export interface SweepReport {
  expiredBids: number;
  timedOut: number;
  lostTasks: number;
  /** Executions ended from the backend's account of a stopped task whose stop event never came. */
  lostStopEvents: number;
  requeued: number;
  relaunched: number;
  /** Capacity reservations of ended executions given back. */
  released: number;
  /** Executions this pass could not handle (a failed write); the next pass tries again. */
  skipped: number;
}

/**
 * Runs the sweep's work on one execution. One that fails is logged and skipped, so one
 * record that cannot be written never stops the pass for all the others.
 */
async function isolated(
  core: Core,
  report: SweepReport,
  id: string,
  work: () => Promise<void>,
): Promise<void> {
  try {
    await work();
  } catch (error) {
    report.skipped++;
    core.log.error('sweep skipped an execution', { executionId: id, error });
  }
}

/**
 * A task the backend reports STOPPED while its execution is still active: its stop event is
 * late or lost. The first pass notes it; a pass after the grace applies the stop as the event
 * would have, from the backend's own details. Says whether it ended the execution.
 */
async function endStoppedTask(
  core: Core,
  execution: Execution,
  status: TaskStatus,
  now: Date,
): Promise<boolean> {
  const seenAt = execution.task?.stopSeenAt;
  if (seenAt === undefined) {
    await mutate(core.store, execution.id, (current) =>
      current.task?.id === status.taskId &&
      ACTIVE_STATES.includes(current.state) &&
      current.task.stopSeenAt === undefined
        ? amend(current, now, { task: { ...current.task, stopSeenAt: now.toISOString() } })
        : undefined,
    );
    return false;
  }
  if (Date.parse(seenAt) + STOP_EVENT_GRACE_SECONDS * 1000 > now.getTime()) return false;
  const outcome = await handleTaskStateChange(core, {
    taskArn: status.taskId,
    startedBy: execution.id,
    lastStatus: 'STOPPED',
    ...(status.stopCode === undefined ? {} : { stopCode: status.stopCode }),
    ...(status.stoppedReason === undefined ? {} : { stoppedReason: status.stoppedReason }),
    ...(status.stoppedAt === undefined ? {} : { stoppedAt: status.stoppedAt }),
    ...(status.containers === undefined ? {} : { containers: status.containers }),
    // Nothing follows STOPPED: a late copy of the real event is ignored.
    version: Number.MAX_SAFE_INTEGER,
  });
  return outcome === 'applied';
}

export async function sweep(core: Core): Promise<SweepReport> {
  const report: SweepReport = {
    expiredBids: 0,
    timedOut: 0,
    lostTasks: 0,
    lostStopEvents: 0,
    requeued: 0,
    relaunched: 0,
    released: 0,
    skipped: 0,
  };
  const now = core.clock.now();

  for (const offered of await listAll(core, ['OFFERED'])) {
    if (offered.bid.expiresAt === undefined || Date.parse(offered.bid.expiresAt) > now.getTime()) continue;
    await isolated(core, report, offered.id, async () => {
      await mutate(core.store, offered.id, (current) =>
        current.state === 'OFFERED'
          ? moveTo(current, 'EXPIRED', now, {}, 'the bid was not accepted in time')
          : undefined,
      );
      report.expiredBids++;
    });
  }

  for (const queued of await listAll(core, ['QUEUED'])) {
    if (Date.parse(queued.updatedAt) + core.settings.requeueAfterSeconds * 1000 > now.getTime()) continue;
    await isolated(core, report, queued.id, async () => {
      // Its message may have been dead-lettered: start a new chain, which supersedes the old one.
      const renewed = await mutate(core.store, queued.id, (current) =>
        current.state === 'QUEUED' ? amend(current, now, { dispatchToken: core.ids.next() }) : undefined,
      );
      if (renewed.state !== 'QUEUED') return;
      await core.queue.send(messageFor(renewed));
      report.requeued++;
    });
  }

  const active = await listAll(core, ACTIVE_STATES);
  if (core.history !== undefined) {
    // For the chart of the last hour; a sample that cannot be kept is not worth a failed sweep.
    const history = core.history;
    await core.store
      .queueHead(1)
      .then((queue) =>
        history.record({ at: now.toISOString(), runningJobs: active.length, queuedJobs: queue.length }),
      )
      .catch((error) => core.log.warn('could not keep the node sample', { error }));
  }
  for (const execution of active) {
    await isolated(core, report, execution.id, async () => {
      if (execution.task === undefined) {
        const launchedAt = Date.parse(execution.launchedAt ?? execution.updatedAt);
        if (launchedAt + core.settings.launchGraceSeconds * 1000 < now.getTime()) {
          await core.queue.send(messageFor(execution));
          report.relaunched++;
        }
        return;
      }
      const overdue = execution.deadlineAt !== undefined && Date.parse(execution.deadlineAt) <= now.getTime();
      if (overdue && execution.stopRequested === undefined) {
        const marked = await mutate(core.store, execution.id, (current) =>
          current.stopRequested === undefined && ACTIVE_STATES.includes(current.state)
            ? amend(current, now, { stopRequested: { intent: 'timeout', at: now.toISOString() } })
            : undefined,
        );
        if (marked.stopRequested?.intent === 'timeout' && marked.task !== undefined) {
          await core.backend.stop(marked.task.id, `timed out after ${marked.spec.timeoutSeconds}s`);
          report.timedOut++;
        }
      } else if (
        execution.stopRequested !== undefined &&
        Date.parse(execution.stopRequested.at) + STOP_RETRY_SECONDS * 1000 < now.getTime()
      ) {
        // Ask again: a stop request can be lost like any other call.
        await core.backend.stop(execution.task.id, 'stop requested earlier');
      }
    });
  }

  const withTasks = active.filter((e) => e.task !== undefined);
  if (withTasks.length > 0) {
    const statuses = await core.backend.describe(withTasks.map((e) => e.task?.id ?? ''));
    for (const status of statuses) {
      const execution = withTasks.find((e) => e.task?.id === status.taskId);
      if (execution === undefined) continue;
      if (status.lastStatus === 'STOPPED') {
        await isolated(core, report, execution.id, async () => {
          if (await endStoppedTask(core, execution, status, now)) report.lostStopEvents++;
        });
        continue;
      }
      if (status.lastStatus !== 'MISSING') continue;
      await isolated(core, report, execution.id, async () => {
        // The task is gone and its stop event never came: end the execution from what is stored.
        await handleTaskStateChange(core, {
          taskArn: status.taskId,
          startedBy: execution.id,
          lastStatus: 'STOPPED',
          stopCode: 'TaskLost',
          stoppedReason: 'the task disappeared from the backend without a stop event',
          version: Number.MAX_SAFE_INTEGER,
        });
        report.lostTasks++;
      });
    }
  }
  // An ended execution gives its capacity back once its task no longer holds it: a task
  // winding down (a container the engine has not removed yet) still counts.
  const ended: Execution[] = [];
  for (const holder of await core.ledger.holders()) {
    const execution = await core.store.get(holder);
    if (execution !== undefined && !isTerminal(execution.state)) continue;
    if (execution?.task !== undefined) {
      ended.push(execution);
      continue;
    }
    await isolated(core, report, holder, async () => {
      await core.ledger.release(holder);
      report.released++;
    });
  }
  if (ended.length > 0) {
    const executionOf = new Map(ended.map((e) => [e.task?.id ?? '', e.id]));
    for (const status of await core.backend.describe([...executionOf.keys()])) {
      const id = executionOf.get(status.taskId);
      if (id === undefined || (status.lastStatus !== 'STOPPED' && status.lastStatus !== 'MISSING')) continue;
      await isolated(core, report, id, async () => {
        await core.ledger.release(id);
        report.released++;
      });
    }
  }
  return report;
}
