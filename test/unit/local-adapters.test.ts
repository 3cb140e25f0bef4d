import { describe, expect, it } from 'vitest';
import { digestOf, LocalDatabase } from '../../shared/adapters/local/database.ts';
import { DirectoryObjectStore } from '../../shared/adapters/local/dir-object-store.ts';
import { MemoryCapacityLedger } from '../../shared/adapters/local/memory-ledger.ts';
import { pruneEnded } from '../../shared/adapters/local/retention.ts';
import { type JobQueueOptions, SqliteJobQueue } from '../../shared/adapters/local/sqlite-queue.ts';
import { SqliteExecutionStore, SqliteIdempotencyStore } from '../../shared/adapters/local/sqlite-store.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import {
  InvalidTransition,
  StaleExecution,
  StorageUnavailable,
  ValidationError,
} from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import { moveTo } from '../../shared/use-cases/transitions.ts';
import { offeredExecution } from '../support/fixtures.ts';
import { expectQueuedAheadInDispatchOrder } from '../support/queue-length.ts';
import { tempDir } from '../support/server.ts';

const execution = offeredExecution;
const cursorKey = Buffer.alloc(32, 1);

async function openQueue(options: JobQueueOptions, dir?: string) {
  const database = LocalDatabase.open(dir ?? (await tempDir()));
  return { database, queue: new SqliteJobQueue(database, options) };
}

async function openStore(dir?: string) {
  const database = LocalDatabase.open(dir ?? (await tempDir()));
  return { database, store: new SqliteExecutionStore(database, cursorKey) };
}

describe('local queue (SQS semantics)', () => {
  it('hides a received message for the visibility timeout, then delivers it again', async () => {
    const clock = { t: 0 };
    const { queue } = await openQueue({ visibilitySeconds: 10, maxReceives: 3, now: () => clock.t });
    await queue.send({ executionId: 'x' });

    const [first] = await queue.receive(10, 0);
    expect(first?.receiveCount).toBe(1);
    expect(await queue.receive(10, 0)).toEqual([]);
    clock.t = 10_001;
    const [again] = await queue.receive(10, 0);
    expect(again?.receiveCount).toBe(2);
    expect(again?.receiptHandle).not.toBe(first?.receiptHandle);

    await queue.delete(again?.receiptHandle ?? '');
    clock.t = 30_000;
    expect(await queue.receive(10, 0)).toEqual([]);
    expect(queue.depth).toBe(0);
  });

  it('holds a delayed message back, and dead-letters after too many receives', async () => {
    const clock = { t: 0 };
    const { queue } = await openQueue({ visibilitySeconds: 1, maxReceives: 2, now: () => clock.t });
    await queue.send({ executionId: 'late' }, { delaySeconds: 5 });
    expect(await queue.receive(1, 0)).toEqual([]);
    clock.t = 5_000;
    expect((await queue.receive(1, 0)).map((m) => JSON.parse(m.body).executionId)).toEqual(['late']);
    clock.t = 6_001;
    expect(await queue.receive(1, 0)).toHaveLength(1);
    clock.t = 7_002;
    expect(await queue.receive(1, 0)).toEqual([]);
    expect(queue.deadLetters.map((m) => m.receiveCount)).toEqual([3]);
  });

  it('keeps messages across a restart, and delivers again at once what the dead server had in hand', async () => {
    const dir = await tempDir();
    const clock = { t: 0 };
    const first = await openQueue({ visibilitySeconds: 600, maxReceives: 5, now: () => clock.t }, dir);
    await first.queue.send({ executionId: 'taken' });
    await first.queue.send({ executionId: 'waiting' }, { delaySeconds: 60 });
    expect(await first.queue.receive(10, 0)).toHaveLength(1);
    first.database.close();

    const second = await openQueue({ visibilitySeconds: 600, maxReceives: 5, now: () => clock.t }, dir);
    expect(second.queue.depth).toBe(2);
    expect(second.queue.holdsMessageFor('waiting')).toBe(true);
    const [again] = await second.queue.receive(10, 0);
    expect(JSON.parse(again?.body ?? '{}').executionId).toBe('taken');
    expect(again?.receiveCount).toBe(2);
    second.queue.releaseDelayed(1);
    expect((await second.queue.receive(10, 0)).map((m) => JSON.parse(m.body).executionId)).toEqual([
      'waiting',
    ]);
  });

  it('wakes a waiting receiver when a message arrives', async () => {
    const { queue } = await openQueue({ visibilitySeconds: 30, maxReceives: 3 });
    const waiting = queue.receive(1, 5_000);
    await queue.send({ executionId: 'now' });
    expect(await waiting).toHaveLength(1);
  });
});

describe('local execution store (SQLite)', () => {
  it('writes only on the version it was given, and only along the transition table', async () => {
    const { store } = await openStore();
    const offered = execution('ex_1', '2030-01-01T00:00:00.000Z');
    await store.create(offered);
    const queued = moveTo(offered, 'QUEUED', new Date());

    await store.update(queued, offered);
    await expect(store.update(moveTo(offered, 'EXPIRED', new Date()), offered)).rejects.toBeInstanceOf(
      StaleExecution,
    );
    await expect(store.update({ ...queued, state: 'OFFERED', version: 3 }, queued)).rejects.toBeInstanceOf(
      InvalidTransition,
    );
    // The version read with another state is not what is stored: a caller's mistake loses, like a race.
    await expect(
      store.update(moveTo(queued, 'LAUNCHING', new Date()), { version: queued.version, state: 'OFFERED' }),
    ).rejects.toBeInstanceOf(StaleExecution);
    expect((await store.get('ex_1'))?.state).toBe('QUEUED');
    await expect(store.create(offered)).rejects.toBeInstanceOf(StaleExecution);
  });

  it('survives a restart with every write', async () => {
    const dir = await tempDir();
    const { database, store } = await openStore(dir);
    const offered = execution('ex_1', '2030-01-01T00:00:00.000Z');
    await store.create(offered);
    await store.update(moveTo(offered, 'QUEUED', new Date()), offered);
    await store.create(execution('ex_2', '2030-01-01T00:00:01.000Z'));
    database.close();

    const { store: reopened } = await openStore(dir);
    expect((await reopened.get('ex_1'))?.state).toBe('QUEUED');
    expect((await reopened.list({ limit: 10 })).items.map((e) => e.id)).toEqual(['ex_2', 'ex_1']);
  });

  it('pages newest first by owner and state, and refuses cursors it did not issue', async () => {
    const { store } = await openStore();
    for (let i = 0; i < 5; i++) await store.create(execution(`ex_${i}`, `2030-01-01T00:00:0${i}.000Z`));
    await store.create(execution('ex_other', '2030-01-01T00:00:09.000Z', 'b'));

    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.list({
        owner: 'a',
        states: ['OFFERED'],
        limit: 2,
        ...(cursor ? { cursor } : {}),
      });
      seen.push(...page.items.map((e) => e.id));
      cursor = page.nextCursor;
    } while (cursor !== undefined);

    expect(seen).toEqual(['ex_4', 'ex_3', 'ex_2', 'ex_1', 'ex_0']);
    await expect(store.list({ limit: 2, cursor: 'bm9wZQ.forged' })).rejects.toBeInstanceOf(ValidationError);
    expect((await store.list({ owner: 'a', states: ['RUNNING'], limit: 10 })).items).toEqual([]);
  });

  it('filters by labels and image, page by page', async () => {
    const { store } = await openStore();
    const wanted: string[] = [];
    for (let i = 0; i < 9; i++) {
      const e = execution(`ex_${i}`, `2030-01-01T00:00:0${i}.000Z`);
      const labels: Record<string, string> =
        i % 3 === 0 ? { team: 'data', tier: 'gold, plus' } : { team: 'web' };
      await store.create({ ...e, spec: { ...e.spec, image: 'x/y:1', labels } });
      if (i % 3 === 0) wanted.unshift(e.id);
    }
    const other = execution('ex_other', '2030-01-01T00:00:09.000Z');
    await store.create({
      ...other,
      spec: { ...other.spec, image: 'x/z:2', labels: { team: 'data', tier: 'gold, plus' } },
    });

    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.list({
        owner: 'a',
        labels: { team: 'data', tier: 'gold, plus' },
        image: 'x/y:1',
        limit: 2,
        ...(cursor ? { cursor } : {}),
      });
      seen.push(...page.items.map((e) => e.id));
      cursor = page.nextCursor;
    } while (cursor !== undefined);

    expect(seen).toEqual(wanted);
    expect((await store.list({ owner: 'a', image: 'x/z:2', limit: 10 })).items.map((e) => e.id)).toEqual([
      'ex_other',
    ]);
    expect((await store.list({ owner: 'a', labels: { team: 'none' }, limit: 10 })).items).toEqual([]);
  });

  it('filters by label keys whatever their values, and by the start of the name as written', async () => {
    const { store } = await openStore();
    const named = async (
      id: string,
      at: string,
      name: string | undefined,
      labels: Record<string, string>,
    ) => {
      const e = execution(id, at);
      await store.create({ ...e, spec: { ...e.spec, ...(name === undefined ? {} : { name }), labels } });
    };
    await named('ex_1', '2030-01-01T00:00:01.000Z', 'align sample_1', { run: 'r1', step: '' });
    await named('ex_2', '2030-01-01T00:00:02.000Z', 'align sample_2', { run: 'r2' });
    await named('ex_3', '2030-01-01T00:00:03.000Z', 'align%', { step: 'x' });
    await named('ex_4', '2030-01-01T00:00:04.000Z', undefined, { run: 'r3', step: 'y' });
    await named('ex_5', '2030-01-01T00:00:05.000Z', '🚀 launch', {});
    const ids = async (query: Parameters<typeof store.list>[0]) =>
      (await store.list(query)).items.map((e) => e.id);

    expect(await ids({ owner: 'a', labelKeys: ['step'], limit: 10 })).toEqual(['ex_4', 'ex_3', 'ex_1']);
    expect(await ids({ owner: 'a', labelKeys: ['run', 'step'], limit: 10 })).toEqual(['ex_4', 'ex_1']);
    expect(await ids({ owner: 'a', namePrefix: 'align s', limit: 10 })).toEqual(['ex_2', 'ex_1']);
    // "%" and "_" are characters like any other, not patterns.
    expect(await ids({ owner: 'a', namePrefix: 'align%', limit: 10 })).toEqual(['ex_3']);
    expect(await ids({ owner: 'a', namePrefix: 'align_', limit: 10 })).toEqual([]);
    // Characters, not UTF-16 units: an emoji is one.
    expect(await ids({ owner: 'a', namePrefix: '🚀', limit: 10 })).toEqual(['ex_5']);
    expect(await ids({ owner: 'a', namePrefix: 'align', labelKeys: ['run'], limit: 10 })).toEqual([
      'ex_2',
      'ex_1',
    ]);
  });
});

describe('local idempotency store (SQLite)', () => {
  const claim = (expiresAt: string) => ({ fingerprint: 'f', state: 'IN_PROGRESS' as const, expiresAt });

  it('answers a live claim with the claim, and lets a claim whose lease ran out be taken again', async () => {
    const clock = { t: Date.parse('2030-01-01T00:00:00.000Z') };
    const keys = new SqliteIdempotencyStore(LocalDatabase.open(await tempDir()), () => clock.t);
    expect(await keys.claim('k', claim('2030-01-01T00:01:00.000Z'))).toBeUndefined();
    expect(await keys.claim('k', claim('2030-01-01T00:02:00.000Z'))).toMatchObject({ state: 'IN_PROGRESS' });
    clock.t = Date.parse('2030-01-01T00:01:00.001Z');
    expect(await keys.claim('k', claim('2030-01-01T00:03:00.000Z'))).toBeUndefined();
  });

  it('deletes expired keys while it runs, a few per claim', async () => {
    const clock = { t: Date.parse('2030-01-01T00:00:00.000Z') };
    const database = LocalDatabase.open(await tempDir());
    const keys = new SqliteIdempotencyStore(database, () => clock.t);
    const rows = () =>
      (database.db.prepare('SELECT count(*) AS n FROM idempotency').get() as { n: number }).n;
    for (let i = 0; i < 40; i++) await keys.claim(`old-${i}`, claim('2030-01-01T00:01:00.000Z'));
    expect(rows()).toBe(40);

    clock.t = Date.parse('2030-01-02T00:00:00.000Z');
    await keys.claim('new-1', claim('2030-01-03T00:00:00.000Z'));
    expect(rows()).toBeLessThan(41);
    expect(rows()).toBeGreaterThan(1);
    for (let i = 2; i <= 10; i++) await keys.claim(`new-${i}`, claim('2030-01-03T00:00:00.000Z'));
    expect(rows()).toBe(10);
  });

  it('drops claims still in progress when it opens (their server is gone) and keeps completed answers', async () => {
    const dir = await tempDir();
    const database = LocalDatabase.open(dir);
    const keys = new SqliteIdempotencyStore(database);
    await keys.claim('open', claim('2099-01-01T00:00:00.000Z'));
    await keys.complete('done', {
      fingerprint: 'f',
      state: 'COMPLETED',
      response: { statusCode: 201, body: '{}', headers: {} },
      expiresAt: '2099-01-01T00:00:00.000Z',
    });
    database.close();

    const reopened = new SqliteIdempotencyStore(LocalDatabase.open(dir));
    expect(await reopened.claim('open', claim('2099-01-01T00:00:00.000Z'))).toBeUndefined();
    expect(await reopened.claim('done', claim('2099-01-01T00:00:00.000Z'))).toMatchObject({
      state: 'COMPLETED',
      response: { statusCode: 201 },
    });
  });
});

describe('local database', () => {
  it('refuses a record whose stored JSON does not parse, naming the file and the id', async () => {
    const { database, store } = await openStore();
    await store.create(execution('ex_1', '2030-01-01T00:00:00.000Z'));
    database.db
      .prepare("UPDATE executions SET body = '{not json', digest = ? WHERE id = 'ex_1'")
      .run(digestOf('{not json'));
    await expect(store.get('ex_1')).rejects.toThrow(`the record ex_1 in ${database.file} is damaged`);
    await expect(store.list({ limit: 10 })).rejects.toThrow('ex_1');
  });

  it('maps a write the disk refuses to StorageUnavailable and keeps nothing of it', async () => {
    const { database, store } = await openStore();
    database.db.exec(
      "CREATE TRIGGER refuse BEFORE INSERT ON executions BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    );
    // SQLite reports a full disk as SQLITE_FULL; the trigger above raises a generic error,
    // so the mapping is checked by handing the error code through the same path.
    const full = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
    expect(() =>
      database.write(() => {
        throw full;
      }),
    ).toThrow(StorageUnavailable);
    await expect(store.create(execution('ex_1', '2030-01-01T00:00:00.000Z'))).rejects.toThrow('disk full');
    database.db.exec('DROP TRIGGER refuse');
    expect(await store.get('ex_1')).toBeUndefined();
  });
});

describe('local queue head', () => {
  it('counts the jobs ahead of one in dispatch order, up to a cap', async () => {
    const { store } = await openStore();
    await expectQueuedAheadInDispatchOrder(store, 'erin');
  });

  it('orders queued records by priority then queue time, in a database from before its indexes', async () => {
    const dir = await tempDir();
    const { database, store } = await openStore(dir);
    const queue = async (id: string, priority: number | undefined, queuedAt: string) => {
      const offer = execution(id, '2030-01-01T00:00:00.000Z');
      const spec = priority === undefined ? offer.spec : { ...offer.spec, priority };
      await store.create({ ...offer, spec });
      await store.update(moveTo({ ...offer, spec }, 'QUEUED', new Date(queuedAt), { queuedAt }), offer);
    };
    await queue('old-low', -5, '2030-01-01T00:00:01.000Z');
    await queue('plain', undefined, '2030-01-01T00:00:03.000Z');
    await queue('high', 9, '2030-01-01T00:00:04.000Z');
    await queue('plain-earlier', 0, '2030-01-01T00:00:02.000Z');
    await store.create(execution('offered', '2030-01-01T00:00:00.000Z'));
    // As an earlier Ferry left it: schema 2, without the queue indexes, the queue length or the
    // node's samples.
    database.db.exec(
      `DROP INDEX executions_queue_priority; DROP INDEX executions_queue_age;
       DROP TRIGGER executions_queued_in; DROP TRIGGER executions_queued_moved;
       DROP TRIGGER executions_queued_out; DROP TABLE queue_length; DROP TABLE node_samples;`,
    );
    database.db.pragma('user_version = 2');
    database.close();

    const reopened = await openStore(dir);
    const head = await reopened.store.queueHead(3);
    expect(head.first.map((e) => e.id)).toEqual(['high', 'plain-earlier', 'plain']);
    expect(head.oldest?.id).toBe('old-low');
    expect(head.length).toBe(4);
  });

  it('deletes only the version it read, and retention takes only what ended before the cutoff', async () => {
    const dir = await tempDir();
    const { store } = await openStore(dir);
    const objects = await DirectoryObjectStore.open(dir, () => 'http://127.0.0.1:1');
    const ended = (id: string, createdAt: string, endedAt: string): Execution => ({
      ...execution(id, createdAt),
      state: 'COMPLETED',
      endedAt,
    });
    const old = ended('ex_old', '2030-01-01T00:00:00.000Z', '2030-01-01T00:01:00.000Z');
    const recent = ended('ex_recent', '2030-01-01T00:00:01.000Z', '2030-03-01T00:00:00.000Z');
    const heldOld = ended('ex_held', '2030-01-01T00:00:02.000Z', '2030-01-01T00:02:00.000Z');
    const stillRunning = {
      ...execution('ex_running', '2030-01-01T00:00:03.000Z'),
      state: 'RUNNING' as const,
    };
    for (const e of [old, recent, heldOld, stillRunning]) {
      await store.create(e);
      await objects.put(`executions/${e.id}/stdout`, 'out');
    }
    const ledger = new MemoryCapacityLedger();
    await ledger.reserve(
      'ex_held',
      { cpu: 1, memoryMiB: 1 },
      { maxConcurrency: 4, maxCpu: 4, maxMemoryMiB: 4096 },
    );

    await expect(
      store.delete('ex_recent', { version: recent.version + 1, state: 'COMPLETED' }),
    ).rejects.toBeInstanceOf(StaleExecution);
    const pruned = await pruneEnded(
      store,
      objects,
      ledger,
      new Date('2030-02-01T00:00:00.000Z'),
      silentLogger,
    );

    expect(pruned).toBe(1);
    expect(await store.get('ex_old')).toBeUndefined();
    expect(await objects.get('executions/ex_old/stdout')).toBeUndefined();
    for (const kept of ['ex_recent', 'ex_held', 'ex_running']) {
      expect((await store.get(kept))?.id).toBe(kept);
      expect((await objects.get(`executions/${kept}/stdout`))?.toString()).toBe('out');
    }
  });
});
