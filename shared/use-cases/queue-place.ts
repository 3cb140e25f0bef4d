// Where a queued job stands: its place in line and what holds it back, worked out when asked
// from the same picture the dispatcher decides on, so nothing is written while jobs wait.

import type { Core } from '../core.ts';
import { decideLaunch, type WaitCause } from '../domain/capacity.ts';
import { InvalidTransition } from '../errors.ts';
import { getOwned } from './bids.ts';
import { demandOf, launchUsage } from './usage.ts';

/** Past this many jobs ahead the count stops: reading further would cost more than it tells. */
export const QUEUE_AHEAD_CAP = 1000;

export interface QueuePlace {
  readonly executionId: string;
  /** 1 for the next job in the order the dispatcher considers them (priority, then age). */
  readonly position: number;
  /** When more jobs are ahead than were counted: the position is at least this. */
  readonly positionAtLeast: boolean;
  readonly queuedJobs: number;
  /** `dispatch` when capacity is free for it and only the dispatcher's next pass is awaited. */
  readonly waitingFor: WaitCause | 'dispatch';
  readonly reason: string;
  readonly reservedFor?: string;
}

export async function queuePlace(core: Core, owner: string, id: string): Promise<QueuePlace> {
  const execution = await getOwned(core, owner, id);
  if (execution.state !== 'QUEUED') {
    throw new InvalidTransition(`execution ${id} is ${execution.state}, not queued`);
  }
  const [ahead, usage] = await Promise.all([
    core.store.queuedAhead(execution, QUEUE_AHEAD_CAP),
    launchUsage(core),
  ]);
  const decision = decideLaunch(demandOf(execution), usage, core.settings.capacity, core.clock.now());
  return {
    executionId: id,
    position: ahead + 1,
    positionAtLeast: ahead >= QUEUE_AHEAD_CAP,
    queuedJobs: Math.max(usage.queuedJobs ?? usage.waiting.length, ahead + 1),
    ...(decision.launch
      ? {
          waitingFor: 'dispatch' as const,
          reason: 'capacity is free for it: it starts when the dispatcher next takes it up',
        }
      : {
          waitingFor: decision.cause,
          reason: decision.reason,
          ...(decision.reservedFor === undefined ? {} : { reservedFor: decision.reservedFor }),
        }),
  };
}
