import { describe, expect, it } from 'vitest';
import type { Core } from '../../shared/core.ts';
import { NotFound } from '../../shared/errors.ts';
import type { ExecutionStore } from '../../shared/ports.ts';
import { askForBid, submitJob } from '../../shared/use-cases/bids.ts';
import { dispatch } from '../../shared/use-cases/dispatch.ts';
import { queuePlace } from '../../shared/use-cases/queue-place.ts';
import { QUEUE_HEAD } from '../../shared/use-cases/usage.ts';
import { buildTestCore } from '../support/core.ts';

const OWNER = 'owner-a';
const job = { image: 'alpine:3', command: ['true'], timeoutSeconds: 60 };

/** The store, counting the records each read hands back. */
function counting(store: ExecutionStore): { store: ExecutionStore; read: { records: number } } {
  const read = { records: 0 };
  return {
    read,
    store: {
      create: (execution) => store.create(execution),
      update: (next, expected) => store.update(next, expected),
      delete: (id, expected) => store.delete(id, expected),
      countByState: (owner, cap) => store.countByState(owner, cap),
      get: async (id) => {
        const found = await store.get(id);
        if (found !== undefined) read.records += 1;
        return found;
      },
      list: async (query) => {
        const page = await store.list(query);
        read.records += page.items.length;
        return page;
      },
      queuedAhead: (execution, cap) => store.queuedAhead(execution, cap),
      queueHead: async (limit) => {
        const head = await store.queueHead(limit);
        read.records += head.first.length + (head.oldest === undefined ? 0 : 1);
        return head;
      },
    },
  };
}

async function queueUp(core: Core, count: number, spec: object = job): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) ids.push((await submitJob(core, OWNER, spec)).id);
  return ids;
}

describe('the cost of a decision', () => {
  it('reads a bounded number of records for a bid and a dispatch, with 1,000 jobs queued', async () => {
    const { core } = await buildTestCore();
    const queued = await queueUp(core, 1000);
    const { store, read } = counting(core.store);
    const watched: Core = { ...core, store };

    const bid = await askForBid(watched, OWNER, job);
    expect(bid.bid.estimate?.queue).toEqual({ runningJobs: 0, queuedJobs: 1000 });
    const forBid = read.records;

    read.records = 0;
    expect((await dispatch(watched, { executionId: queued[0] ?? '' })).outcome).toBe('launched');
    const forDispatch = read.records;

    // The head of the queue, the oldest job, the active jobs and the job itself.
    expect(forBid).toBeLessThanOrEqual(QUEUE_HEAD + 1);
    expect(forDispatch).toBeLessThanOrEqual(QUEUE_HEAD + 4);
  });

  it('keeps the reservation for the oldest job when it is behind a full head of higher priorities', async () => {
    const { core, now } = await buildTestCore();
    const [running] = await queueUp(core, 1, { ...job, resources: { cpu: 1 } });
    expect((await dispatch(core, { executionId: running ?? '' })).outcome).toBe('launched');
    const [starving] = await queueUp(core, 1, { ...job, resources: { cpu: 2 }, priority: -100 });
    now.value = new Date(now.value.getTime() + 1_000);
    await queueUp(core, QUEUE_HEAD + 5, { ...job, resources: { cpu: 2 }, priority: 100 });
    now.value = new Date(now.value.getTime() + 120_000);
    const [small] = await queueUp(core, 1, { ...job, resources: { cpu: 0.5 } });

    const outcome = await dispatch(core, { executionId: small ?? '' });

    expect(outcome).toMatchObject({ outcome: 'deferred' });
    expect(outcome.outcome === 'deferred' && outcome.reason).toContain(
      `capacity is reserved for ${starving}`,
    );
  });

  it('lets a job of higher priority that fits go first, reading only the head', async () => {
    const { core } = await buildTestCore();
    const [low] = await queueUp(core, 1, { ...job, resources: { cpu: 0.5 }, priority: 0 });
    await queueUp(core, 200, { ...job, resources: { cpu: 0.5 }, priority: -1 });
    const [high] = await queueUp(core, 1, { ...job, resources: { cpu: 0.5 }, priority: 5 });

    const outcome = await dispatch(core, { executionId: low ?? '' });

    expect(outcome).toMatchObject({ outcome: 'deferred' });
    expect(outcome.outcome === 'deferred' && outcome.reason).toContain(`${high} (priority 5)`);
    expect((await dispatch(core, { executionId: high ?? '' })).outcome).toBe('launched');
  });
});

describe("a queued job's place", () => {
  it('says its place in line and that it waits for capacity, with what is free', async () => {
    const { core, now } = await buildTestCore();
    const [running, second] = await queueUp(core, 2, { ...job, resources: { cpu: 1 } });
    for (const id of [running, second]) await dispatch(core, { executionId: id ?? '' });
    now.value = new Date(now.value.getTime() + 1_000);
    const [next] = await queueUp(core, 1, { ...job, resources: { cpu: 1 } });
    now.value = new Date(now.value.getTime() + 1_000);
    const [after] = await queueUp(core, 1, { ...job, resources: { cpu: 1 } });

    const place = await queuePlace(core, OWNER, after ?? '');

    expect(place).toMatchObject({
      position: 2,
      positionAtLeast: false,
      queuedJobs: 2,
      waitingFor: 'capacity',
    });
    expect(place.reason).toBe('needs 1 vCPU, 1024 MiB; 0 vCPU, 2048 MiB and 0 of 2 slots free');
    expect((await queuePlace(core, OWNER, next ?? '')).position).toBe(1);
  });

  it('names the job of higher priority that goes first, and the job capacity is reserved for', async () => {
    const { core, now } = await buildTestCore();
    const [busy] = await queueUp(core, 1, { ...job, resources: { cpu: 1 } });
    await dispatch(core, { executionId: busy ?? '' });
    const [big] = await queueUp(core, 1, { ...job, resources: { cpu: 2 } });
    now.value = new Date(now.value.getTime() + 1_000);
    const [low] = await queueUp(core, 1, { ...job, resources: { cpu: 1 }, priority: 0 });
    const [high] = await queueUp(core, 1, { ...job, resources: { cpu: 1 }, priority: 3 });

    expect(await queuePlace(core, OWNER, low ?? '')).toMatchObject({
      position: 3,
      waitingFor: 'priority',
      reason: `${high} (priority 3) fits the free capacity and goes first`,
    });
    expect(await queuePlace(core, OWNER, high ?? '')).toMatchObject({ position: 1, waitingFor: 'dispatch' });

    now.value = new Date(now.value.getTime() + 61_000);
    const reserved = await queuePlace(core, OWNER, high ?? '');
    expect(reserved).toMatchObject({ waitingFor: 'reservation', reservedFor: big });
    expect(reserved.reason).toContain(`capacity is reserved for ${big}`);
  });

  it("is refused for a job not queued, and for another caller's job", async () => {
    const { core } = await buildTestCore();
    const [id] = await queueUp(core, 1);
    await dispatch(core, { executionId: id ?? '' });
    await expect(queuePlace(core, OWNER, id ?? '')).rejects.toThrow(/is LAUNCHING, not queued/);
    const [other] = await queueUp(core, 1);
    await expect(queuePlace(core, 'owner-b', other ?? '')).rejects.toBeInstanceOf(NotFound);
  });
});
