import { beforeAll, describe, expect, it } from 'vitest';
import { DynamoNodeHistory } from '../../shared/adapters/aws/dynamo-history.ts';
import { DynamoExecutionStore, DynamoIdempotencyStore } from '../../shared/adapters/aws/dynamo-store.ts';
import { executionIds } from '../../shared/adapters/system.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import { StaleExecution, ValidationError } from '../../shared/errors.ts';
import { moveTo } from '../../shared/use-cases/transitions.ts';
import { type AwsEnvironment, createAwsEnvironment } from '../support/aws.ts';
import { offeredExecution } from '../support/fixtures.ts';
import { expectQueuedAheadInDispatchOrder } from '../support/queue-length.ts';

const ids = executionIds();

const offered = (owner: string, createdAt: string): Execution =>
  offeredExecution(ids.next(), createdAt, owner);

describe('DynamoDB execution store', () => {
  let aws: AwsEnvironment;
  let store: DynamoExecutionStore;

  beforeAll(async () => {
    aws = await createAwsEnvironment();
    store = new DynamoExecutionStore({
      tableName: aws.tableName,
      retentionDays: 7,
      client: aws.clients.dynamodb,
    });
  });

  it('writes only on the version read', async () => {
    const execution = offered('alice', '2030-01-01T00:00:00.000Z');
    await store.create(execution);
    await expect(store.create(execution)).rejects.toBeInstanceOf(StaleExecution);

    await store.update(moveTo(execution, 'QUEUED', new Date()), execution);
    await expect(store.update(moveTo(execution, 'EXPIRED', new Date()), execution)).rejects.toBeInstanceOf(
      StaleExecution,
    );
    expect((await store.get(execution.id))?.state).toBe('QUEUED');
  });

  it('lists by owner and several states, newest first, page by page', async () => {
    const made: Execution[] = [];
    for (let i = 0; i < 7; i++) {
      let e = offered('bob', `2030-01-02T00:00:0${i}.000Z`);
      await store.create(e);
      if (i % 2 === 0) {
        const next = moveTo(e, 'QUEUED', new Date());
        await store.update(next, e);
        e = next;
      }
      made.push(e);
    }
    await store.create(offered('carol', '2030-01-02T00:00:09.000Z'));

    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.list({
        owner: 'bob',
        states: ['OFFERED', 'QUEUED'],
        limit: 3,
        ...(cursor ? { cursor } : {}),
      });
      expect(page.items.length).toBeLessThanOrEqual(3);
      seen.push(...page.items.map((e) => e.id));
      cursor = page.nextCursor;
    } while (cursor !== undefined);

    expect(seen).toEqual([...made].reverse().map((e) => e.id));
    const queuedOnly = await store.list({ owner: 'bob', states: ['QUEUED'], limit: 10 });
    expect(queuedOnly.items.map((e) => e.state)).toEqual(['QUEUED', 'QUEUED', 'QUEUED', 'QUEUED']);
    const all = await store.list({ owner: 'bob', limit: 100 });
    expect(all.items).toHaveLength(7);
  });

  it('filters by labels and image, page by page, through pages the filter leaves empty', async () => {
    const tagged = (i: number, labels: Record<string, string>, image = 'x/y:1'): Execution => {
      const e = offered('dora', `2030-01-03T00:00:${String(i).padStart(2, '0')}.000Z`);
      return { ...e, spec: { ...e.spec, image, labels } };
    };
    const wanted: Execution[] = [];
    for (let i = 0; i < 12; i++) {
      // Only every fourth matches both labels; the others fill whole pages without a match.
      const labels: Record<string, string> =
        i % 4 === 0 ? { team: 'data', tier: 'gold, plus' } : { team: 'web' };
      const e = tagged(i, labels);
      await store.create(e);
      if (i % 4 === 0) wanted.push(e);
    }
    const other = tagged(20, { team: 'data', tier: 'gold, plus' }, 'x/z:2');
    await store.create(other);

    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await store.list({
        owner: 'dora',
        labels: { team: 'data', tier: 'gold, plus' },
        image: 'x/y:1',
        limit: 2,
        ...(cursor ? { cursor } : {}),
      });
      seen.push(...page.items.map((e) => e.id));
      cursor = page.nextCursor;
      pages += 1;
    } while (cursor !== undefined && pages < 50);

    expect(seen).toEqual([...wanted].reverse().map((e) => e.id));
    const byImage = await store.list({ owner: 'dora', image: 'x/z:2', limit: 20 });
    expect(byImage.items.map((e) => e.id)).toEqual([other.id]);
  });

  it('filters by label keys whatever their values, and by the start of the name as written', async () => {
    const named = async (i: number, name: string | undefined, labels: Record<string, string>) => {
      const e = offered('fred', `2030-01-05T00:00:0${i}.000Z`);
      await store.create({ ...e, spec: { ...e.spec, ...(name === undefined ? {} : { name }), labels } });
      return e.id;
    };
    const one = await named(1, 'align sample_1', { run: 'r1', step: '' });
    const two = await named(2, 'align sample_2', { run: 'r2' });
    const three = await named(3, 'align%', { step: 'x' });
    const four = await named(4, undefined, { run: 'r3', step: 'y' });
    const ids = async (query: Parameters<typeof store.list>[0]) =>
      (await store.list(query)).items.map((e) => e.id);

    expect(await ids({ owner: 'fred', labelKeys: ['step'], limit: 10 })).toEqual([four, three, one]);
    expect(await ids({ owner: 'fred', labelKeys: ['run', 'step'], limit: 10 })).toEqual([four, one]);
    expect(await ids({ owner: 'fred', namePrefix: 'align s', limit: 10 })).toEqual([two, one]);
    expect(await ids({ owner: 'fred', namePrefix: 'align%', limit: 10 })).toEqual([three]);
    expect(await ids({ owner: 'fred', namePrefix: 'align', labelKeys: ['run'], limit: 10 })).toEqual([
      two,
      one,
    ]);
  });

  it('counts one owner’s executions by state, stopping at the cap and saying so', async () => {
    for (let i = 0; i < 5; i++) {
      const e = offered('fern', `2030-01-05T00:00:0${i}.000Z`);
      await store.create(e);
      if (i < 2) await store.update(moveTo(e, 'QUEUED', new Date()), e);
    }
    await store.create(offered('gus', '2030-01-05T00:00:09.000Z'));
    const all = await store.countByState('fern', 100);
    expect(all.atLeast).toEqual([]);
    expect(all.counts).toMatchObject({ OFFERED: 3, QUEUED: 2, RUNNING: 0, COMPLETED: 0 });
    expect(Object.keys(all.counts)).toHaveLength(11);
    // Read a page of one at a time, the count stops at the cap in each state that has more.
    const capped = await store.countByState('fern', 2);
    expect(capped.counts.OFFERED).toBeGreaterThanOrEqual(2);
    expect(capped.atLeast).toContain('OFFERED');
  });

  it('deletes an execution only as it was read', async () => {
    const e = { ...offered('erin', '2030-01-04T00:00:00.000Z'), state: 'COMPLETED' as const };
    await store.create(e);

    await expect(store.delete(e.id, { version: e.version + 1, state: 'COMPLETED' })).rejects.toBeInstanceOf(
      StaleExecution,
    );
    expect((await store.get(e.id))?.id).toBe(e.id);
    await store.delete(e.id, e);
    expect(await store.get(e.id)).toBeUndefined();
    await expect(store.delete(e.id, e)).rejects.toBeInstanceOf(StaleExecution);
  });

  it('refuses a cursor from nowhere, or from another query', async () => {
    await expect(store.list({ owner: 'bob', limit: 1, cursor: 'not-a-cursor' })).rejects.toBeInstanceOf(
      ValidationError,
    );
    const page = await store.list({ owner: 'bob', states: ['QUEUED'], limit: 1 });
    expect(page.nextCursor).toBeDefined();
    await expect(
      store.list({ owner: 'bob', states: ['OFFERED'], limit: 1, cursor: page.nextCursor }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  it('claims an idempotency key once', async () => {
    const keys = new DynamoIdempotencyStore(aws.tableName, aws.clients.dynamodb);
    const record = {
      fingerprint: 'f1',
      state: 'IN_PROGRESS' as const,
      expiresAt: '2099-01-01T00:00:00.000Z',
    };
    expect(await keys.claim('k1', record)).toBeUndefined();
    expect(await keys.claim('k1', { ...record, fingerprint: 'f2' })).toEqual(record);
    await keys.release('k1');
    expect(await keys.claim('k1', record)).toBeUndefined();
  });

  it('lets a claim whose lease ran out be taken again, as a crashed request leaves it', async () => {
    const keys = new DynamoIdempotencyStore(aws.tableName, aws.clients.dynamodb);
    const lease = (seconds: number) => ({
      fingerprint: 'f1',
      state: 'IN_PROGRESS' as const,
      expiresAt: new Date(Date.now() + seconds * 1000).toISOString(),
    });
    const live = lease(60);
    expect(await keys.claim('k-live', live)).toBeUndefined();
    expect(await keys.claim('k-live', lease(60))).toEqual(live);

    expect(await keys.claim('k-crashed', lease(-5))).toBeUndefined();
    expect(await keys.claim('k-crashed', lease(60))).toBeUndefined();
  });
});

describe('DynamoDB node history', () => {
  it('keeps one sample a minute in one item, and reads from a time on, oldest first', async () => {
    const aws = await createAwsEnvironment();
    const history = new DynamoNodeHistory(aws.tableName, aws.clients.dynamodb);
    const at = (minutes: number, seconds = 0) =>
      new Date(Date.UTC(2030, 0, 1, 12, minutes, seconds)).toISOString();
    expect(await history.since(new Date(at(0)))).toEqual([]);
    await history.record({ at: at(0, 5), runningJobs: 1, queuedJobs: 4 });
    await history.record({ at: at(0, 40), runningJobs: 2, queuedJobs: 3 });
    await history.record({ at: at(1, 10), runningJobs: 2, queuedJobs: 0 });
    expect(await history.since(new Date(at(0)))).toEqual([
      { at: at(0, 40), runningJobs: 2, queuedJobs: 3 },
      { at: at(1, 10), runningJobs: 2, queuedJobs: 0 },
    ]);
    expect(await history.since(new Date(at(1)))).toHaveLength(1);
  });
});

describe('DynamoDB queue head', () => {
  let store: DynamoExecutionStore;

  beforeAll(async () => {
    const aws = await createAwsEnvironment();
    store = new DynamoExecutionStore({
      tableName: aws.tableName,
      retentionDays: 7,
      client: aws.clients.dynamodb,
    });
  });

  const queued = async (priority: number | undefined, queuedAt: string): Promise<Execution> => {
    const base = offered('dave', '2030-01-03T00:00:00.000Z');
    const offer = { ...base, spec: { ...base.spec, ...(priority === undefined ? {} : { priority }) } };
    await store.create(offer);
    const next = moveTo(offer, 'QUEUED', new Date(queuedAt), { queuedAt });
    await store.update(next, offer);
    return next;
  };

  it('reads the highest priorities first, then the oldest, and counts without listing', async () => {
    expect(await store.queueHead(3)).toEqual({ first: [], length: 0 });
    const low = await queued(-100, '2030-01-03T00:00:01.000Z');
    const plainLater = await queued(undefined, '2030-01-03T00:00:05.000Z');
    const plainEarlier = await queued(0, '2030-01-03T00:00:03.000Z');
    const high = await queued(100, '2030-01-03T00:00:09.000Z');
    const middle = await queued(7, '2030-01-03T00:00:08.000Z');
    await store.create(offered('dave', '2030-01-03T00:00:00.500Z'));

    const head = await store.queueHead(3);
    expect(head.first.map((e) => e.id)).toEqual([high.id, middle.id, plainEarlier.id]);
    expect(head.oldest?.id).toBe(low.id);
    expect(head.length).toBe(5);

    // Leaving the queue leaves the indexes: the oldest is now the next in age.
    await store.update(moveTo(low, 'CANCELLED', new Date()), low);
    const after = await store.queueHead(10);
    expect(after.first.map((e) => e.id)).toEqual([high.id, middle.id, plainEarlier.id, plainLater.id]);
    expect(after.oldest?.id).toBe(plainEarlier.id);
    expect(after.length).toBe(4);
  });
});

describe('DynamoDB queue place', () => {
  it('counts the jobs ahead of one in dispatch order, up to a cap', async () => {
    const aws = await createAwsEnvironment();
    const store = new DynamoExecutionStore({
      tableName: aws.tableName,
      retentionDays: 7,
      client: aws.clients.dynamodb,
    });
    await expectQueuedAheadInDispatchOrder(store, 'erin');
  });
});
