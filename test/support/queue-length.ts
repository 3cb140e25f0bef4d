// The queue length's checks, the same for every ExecutionStore: the store-level moves the
// transition table allows, and a job's way through the use cases that put it on the queue
// and take it off.
import { expect } from 'vitest';
import type { Core } from '../../shared/core.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import { allowedTransitions, EXECUTION_STATES, type ExecutionState } from '../../shared/domain/states.ts';
import type { ExecutionStore } from '../../shared/ports.ts';
import { acceptBid, askForBid, submitJob } from '../../shared/use-cases/bids.ts';
import { dispatch } from '../../shared/use-cases/dispatch.ts';
import { cancelExecution } from '../../shared/use-cases/executions.ts';
import { sweep } from '../../shared/use-cases/sweep.ts';
import { moveTo } from '../../shared/use-cases/transitions.ts';
import { offeredExecution } from './fixtures.ts';

/** Every move the transition table allows, as [from, to]. */
export const TRANSITIONS: readonly (readonly [ExecutionState, ExecutionState])[] = EXECUTION_STATES.flatMap(
  (from) => allowedTransitions(from).map((to) => [from, to] as const),
);

/** What a move does to the queue's length: +1 into QUEUED, -1 out of it. */
export const expectedChange = (from: ExecutionState | undefined, to: ExecutionState): number =>
  (to === 'QUEUED' ? 1 : 0) - (from === 'QUEUED' ? 1 : 0);

export const queueLength = async (store: ExecutionStore): Promise<number> =>
  (await store.queueHead(1)).length;

/** A record stored in `state`, as if it had got there through the use cases. */
export async function storedIn(store: ExecutionStore, id: string, state: ExecutionState): Promise<Execution> {
  const at = '2030-01-01T00:00:00.000Z';
  const offered = offeredExecution(id, at);
  const execution: Execution = {
    ...offered,
    state,
    ...(state === 'QUEUED' ? { queuedAt: at } : {}),
    history: [...offered.history, ...(state === 'OFFERED' ? [] : [{ state, at }])],
  };
  await store.create(execution);
  return execution;
}

const OWNER = 'queue-length';
const job = { image: 'public.ecr.aws/docker/library/alpine:3.20', command: ['true'], timeoutSeconds: 60 };

/**
 * Takes jobs through every use case that moves one into or out of the queue, or rewrites it
 * there, checking the length after each: `advance` moves the core's clock on.
 */
export async function expectLengthToFollowUseCases(
  core: Core,
  advance: (seconds: number) => void,
): Promise<void> {
  const length = () => queueLength(core.store);
  expect(await length()).toBe(0);

  const submitted = await submitJob(core, OWNER, job);
  expect(await length()).toBe(1);

  const offered = await askForBid(core, OWNER, job);
  expect(await length()).toBe(1);
  await acceptBid(core, OWNER, offered.id);
  await acceptBid(core, OWNER, offered.id);
  expect(await length()).toBe(2);

  // The sweeper: an offer left too long expires, and queued jobs get a fresh message.
  const forgotten = await askForBid(core, OWNER, job);
  advance(Math.max(core.settings.bidTtlSeconds, core.settings.requeueAfterSeconds) + 1);
  const swept = await sweep(core);
  expect(swept).toMatchObject({ expiredBids: 1, requeued: 2, skipped: 0 });
  expect((await core.store.get(forgotten.id))?.state).toBe('EXPIRED');
  expect(await length()).toBe(2);

  expect((await cancelExecution(core, OWNER, offered.id)).state).toBe('CANCELLED');
  expect(await length()).toBe(1);

  const current = await core.store.get(submitted.id);
  const message = {
    executionId: submitted.id,
    ...(current?.dispatchToken ? { token: current.dispatchToken } : {}),
  };
  expect((await dispatch(core, message)).outcome).toBe('launched');
  expect(await length()).toBe(0);
  // The same message delivered again, and a cancel that comes too late to find it queued.
  expect((await dispatch(core, message)).outcome).toBe('dropped');
  await cancelExecution(core, OWNER, offered.id);
  expect(await length()).toBe(0);
}

/**
 * `queuedAhead` counts the QUEUED executions before one in dispatch order (priority, then
 * queue time, then id), nothing else, and stops at the cap.
 */
export async function expectQueuedAheadInDispatchOrder(store: ExecutionStore, owner: string): Promise<void> {
  const queued = async (id: string, priority: number | undefined, queuedAt: string): Promise<Execution> => {
    const base = offeredExecution(id, '2031-01-01T00:00:00.000Z', owner);
    const execution: Execution = {
      ...base,
      spec: { ...base.spec, ...(priority === undefined ? {} : { priority }) },
      state: 'QUEUED',
      queuedAt,
      history: [...base.history, { state: 'QUEUED', at: queuedAt }],
    };
    await store.create(execution);
    return execution;
  };
  const at = (second: number) => `2031-01-01T00:00:${String(second).padStart(2, '0')}.000Z`;
  const urgent = await queued(`${owner}-urgent`, 50, at(9));
  const first = await queued(`${owner}-a`, undefined, at(1));
  const sameTimeLaterId = await queued(`${owner}-b`, 0, at(1));
  const later = await queued(`${owner}-c`, 0, at(5));
  const low = await queued(`${owner}-low`, -5, at(0));
  const running = { ...offeredExecution(`${owner}-run`, at(0), owner), state: 'RUNNING' as const };
  await store.create(running);

  expect(await store.queuedAhead(urgent, 100)).toBe(0);
  expect(await store.queuedAhead(first, 100)).toBe(1);
  expect(await store.queuedAhead(sameTimeLaterId, 100)).toBe(2);
  expect(await store.queuedAhead(later, 100)).toBe(3);
  expect(await store.queuedAhead(low, 100)).toBe(4);
  expect(await store.queuedAhead(low, 2)).toBe(2);

  await store.update(moveTo(urgent, 'CANCELLED', new Date(at(20))), urgent);
  expect(await store.queuedAhead(later, 100)).toBe(2);
}
