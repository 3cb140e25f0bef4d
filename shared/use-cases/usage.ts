// The capacity picture the dispatcher and the bidder decide on: what holds capacity now,
// and the head of what waits for it. A launch decision reads the ledger's totals and the head
// of the queue: a bounded number of reads however many jobs run or wait. A bid also lists the
// active jobs, whose deadlines its wait estimate needs; those are capped by the capacity
// budget (the ledger admits no more). The queue is read through its indexes a few at a time,
// and its length is a count the store keeps.

import type { Core } from '../core.ts';
import type { Demand, Usage } from '../domain/capacity.ts';
import type { Execution } from '../domain/execution.ts';
import { ACTIVE_STATES, type ExecutionState } from '../domain/states.ts';

export function demandOf(execution: Execution): Demand {
  const constraints = execution.bid.constraints;
  return {
    executionId: execution.id,
    cpu: constraints?.cpu ?? 0,
    memoryMiB: constraints?.memoryMiB ?? 0,
    queuedAt: execution.queuedAt ?? execution.createdAt,
    priority: execution.spec.priority,
    ...(execution.deadlineAt === undefined ? {} : { deadlineAt: execution.deadlineAt }),
    ...(execution.startedAt === undefined ? {} : { startedAt: execution.startedAt }),
  };
}

export async function listAll(core: Core, states: readonly ExecutionState[]): Promise<Execution[]> {
  const all: Execution[] = [];
  let cursor: string | undefined;
  do {
    const page = await core.store.list({ states, limit: 500, ...(cursor === undefined ? {} : { cursor }) });
    all.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor !== undefined);
  return all;
}

/**
 * Queued jobs a decision looks at: those of the highest priorities. A job of higher priority
 * than the candidate that fits goes first; past this many, the candidate may go instead.
 */
export const QUEUE_HEAD = 25;

/**
 * What a launch decision needs, in a bounded number of reads however many jobs run or wait:
 * the ledger's totals (the budget the launch must fit) and the head of the queue.
 */
export async function launchUsage(core: Core): Promise<Usage> {
  const [held, head] = await Promise.all([core.ledger.totals(), queueHeadUsage(core)]);
  return { active: [], held: { jobs: held.tasks, cpu: held.cpu, memoryMiB: held.memoryMiB }, ...head };
}

/** Every active job listed (bids estimate waits from their deadlines), and the head of the queue. */
export async function currentUsage(core: Core): Promise<Usage> {
  const [active, head] = await Promise.all([listAll(core, ACTIVE_STATES), queueHeadUsage(core)]);
  return { active: active.map(demandOf), ...head };
}

/** The head of the queue, its length and its oldest job, as a decision reads them. */
async function queueHeadUsage(core: Core): Promise<Pick<Usage, 'waiting' | 'queuedJobs' | 'oldestWaiting'>> {
  const head = await core.store.queueHead(QUEUE_HEAD);
  return {
    waiting: head.first.map(demandOf),
    queuedJobs: head.length,
    ...(head.oldest === undefined ? {} : { oldestWaiting: demandOf(head.oldest) }),
  };
}
