// Looking at executions, stopping and deleting them: get, list, wait, cancel, delete.

import type { Core } from '../core.ts';
import type { Execution } from '../domain/execution.ts';
import { type ExecutionState, isTerminal } from '../domain/states.ts';
import { InvalidTransition } from '../errors.ts';
import type { ListQuery, Page, StateCounts } from '../ports.ts';
import { getOwned } from './bids.ts';
import { amend, moveTo, mutate } from './transitions.ts';

export const getExecution = getOwned;

export async function listExecutions(
  core: Core,
  owner: string,
  query: Omit<ListQuery, 'owner'>,
): Promise<Page<Execution>> {
  return core.store.list({ owner, ...query });
}

/** A store that reads to count stops here in each state, and says so. */
export const COUNT_CAP = 10_000;

/** How many of the caller's executions are in each state (for a dashboard's totals). */
export async function countExecutions(core: Core, owner: string): Promise<StateCounts> {
  return core.store.countByState(owner, COUNT_CAP);
}

/**
 * Deletes an ended execution: its record, then its stored output. What accepting its result
 * published to a destination stays there. One still running, or whose task still holds
 * capacity while it winds down, is refused (409): nothing is deleted.
 */
export async function deleteExecution(core: Core, owner: string, id: string): Promise<void> {
  const execution = await getOwned(core, owner, id);
  if (!isTerminal(execution.state)) {
    throw new InvalidTransition(
      `execution ${id} is ${execution.state}: only an ended execution can be deleted; cancel it first`,
    );
  }
  if ((await core.ledger.holders()).includes(id)) {
    throw new InvalidTransition(
      `execution ${id} still holds capacity while its task winds down; delete it again in a few seconds`,
    );
  }
  await core.store.delete(id, execution);
  await core.objects.deletePrefix(`executions/${id}/`);
}

/**
 * Holds until the execution is terminal (or in one of `untilStates`) or the timeout passes,
 * and returns it as it is then either way.
 */
export async function waitForExecution(
  core: Core,
  owner: string,
  id: string,
  timeoutSeconds: number,
  untilStates?: readonly ExecutionState[],
): Promise<{ execution: Execution; done: boolean }> {
  const deadline = Date.now() + Math.min(timeoutSeconds, core.settings.maxWaitSeconds) * 1000;
  const reached = (e: Execution) =>
    untilStates?.length ? untilStates.includes(e.state) : isTerminal(e.state);
  for (;;) {
    const execution = await getOwned(core, owner, id);
    if (reached(execution)) return { execution, done: true };
    const left = deadline - Date.now();
    if (left <= 0) return { execution, done: false };
    await core.changes.waitForChange(id, Math.min(left, 1000));
  }
}

/**
 * Cancels a queued job at once; for a launching or running one, records the intent and
 * stops the task — the stop event then makes it CANCELLED, after its output is saved.
 */
export async function cancelExecution(core: Core, owner: string, id: string): Promise<Execution> {
  await getOwned(core, owner, id);
  const now = () => core.clock.now();
  const updated = await mutate(core.store, id, (current) => {
    switch (current.state) {
      case 'QUEUED':
        return moveTo(
          current,
          'CANCELLED',
          now(),
          { endedAt: now().toISOString() },
          'cancelled while queued',
        );
      case 'LAUNCHING':
      case 'RUNNING':
        if (current.stopRequested?.intent === 'cancel') return undefined;
        return amend(current, now(), { stopRequested: { intent: 'cancel', at: now().toISOString() } });
      case 'CANCELLED':
        return undefined;
      default:
        throw new InvalidTransition(
          `execution ${id} is ${current.state}; only a queued, launching or running execution can be cancelled`,
        );
    }
  });
  if (updated.task !== undefined && !isTerminal(updated.state)) {
    await core.backend.stop(updated.task.id, 'cancelled by the caller');
  }
  return updated;
}
