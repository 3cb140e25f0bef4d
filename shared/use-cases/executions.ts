// Looking at executions and stopping them: get, list by states, wait, cancel.

import type { Core } from '../core.ts';
import type { Execution } from '../domain/execution.ts';
import { type ExecutionState, isTerminal } from '../domain/states.ts';
import { InvalidTransition } from '../errors.ts';
import type { Page } from '../ports.ts';
import { getOwned } from './bids.ts';
import { amend, moveTo, mutate } from './transitions.ts';

export const getExecution = getOwned;

export async function listExecutions(
  core: Core,
  owner: string,
  query: { states?: readonly ExecutionState[]; limit: number; cursor?: string },
): Promise<Page<Execution>> {
  return core.store.list({ owner, ...query });
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
