// The queue length in the local database: one row, kept by triggers in the transaction of every
// write that moves an execution into or out of QUEUED, so the queue head reads one row for it.
import { describe, expect, it } from 'vitest';
import { LocalDatabase } from '../../shared/adapters/local/database.ts';
import { SqliteExecutionStore } from '../../shared/adapters/local/sqlite-store.ts';
import { StaleExecution } from '../../shared/errors.ts';
import { amend, moveTo } from '../../shared/use-cases/transitions.ts';
import { buildTestCore } from '../support/core.ts';
import {
  expectedChange,
  expectLengthToFollowUseCases,
  queueLength,
  storedIn,
  TRANSITIONS,
} from '../support/queue-length.ts';
import { tempDir } from '../support/server.ts';

async function openStore(dir?: string) {
  const database = LocalDatabase.open(dir ?? (await tempDir()));
  return { database, store: new SqliteExecutionStore(database, Buffer.alloc(32, 1)) };
}

describe('local queue length', () => {
  it('counts a record created straight into QUEUED, and no other', async () => {
    const { store } = await openStore();
    await storedIn(store, 'ex_offered', 'OFFERED');
    await storedIn(store, 'ex_declined', 'DECLINED');
    expect(await queueLength(store)).toBe(0);

    const queued = await storedIn(store, 'ex_queued', 'QUEUED');
    expect(await queueLength(store)).toBe(1);

    await expect(store.create(queued)).rejects.toBeInstanceOf(StaleExecution);
    expect(await queueLength(store)).toBe(1);
  });

  it('follows every move the transition table allows', async () => {
    const { store } = await openStore();
    for (const [index, [from, to]] of TRANSITIONS.entries()) {
      const execution = await storedIn(store, `ex_${index}`, from);
      const before = await queueLength(store);

      await store.update(moveTo(execution, to, new Date()), execution);

      expect({ from, to, change: (await queueLength(store)) - before }).toEqual({
        from,
        to,
        change: expectedChange(from, to),
      });
    }
  });

  it('keeps the length when a queued record is rewritten and stays queued', async () => {
    const { store } = await openStore();
    const queued = await storedIn(store, 'ex_1', 'QUEUED');

    await store.update(amend(queued, new Date(), { dispatchToken: 'renewed' }), queued);

    expect(await queueLength(store)).toBe(1);
  });

  it('moves once when two writers race from the same read', async () => {
    const { store } = await openStore();
    const offered = await storedIn(store, 'ex_1', 'OFFERED');

    const accepts = await Promise.allSettled([
      store.update(moveTo(offered, 'QUEUED', new Date()), offered),
      store.update(moveTo(offered, 'QUEUED', new Date()), offered),
    ]);

    expect(accepts.map((a) => a.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(accepts.find((a) => a.status === 'rejected')?.reason).toBeInstanceOf(StaleExecution);
    expect(await queueLength(store)).toBe(1);

    const queued = (await store.get(offered.id)) ?? offered;
    const leaving = await Promise.allSettled([
      store.update(moveTo(queued, 'LAUNCHING', new Date()), queued),
      store.update(moveTo(queued, 'CANCELLED', new Date()), queued),
    ]);

    expect(leaving.map((a) => a.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(await queueLength(store)).toBe(0);
  });

  it('changes nothing for a stale duplicate or a write from an older read', async () => {
    const { store } = await openStore();
    const offered = await storedIn(store, 'ex_1', 'OFFERED');
    const queued = moveTo(offered, 'QUEUED', new Date());
    await store.update(queued, offered);

    await expect(store.update(queued, offered)).rejects.toBeInstanceOf(StaleExecution);
    expect(await queueLength(store)).toBe(1);

    await store.update(moveTo(queued, 'LAUNCHING', new Date()), queued);
    await expect(store.update(moveTo(queued, 'CANCELLED', new Date()), queued)).rejects.toBeInstanceOf(
      StaleExecution,
    );
    expect(await queueLength(store)).toBe(0);
  });

  it('keeps the length across a restart, and sets it from the records when it disagrees', async () => {
    const dir = await tempDir();
    const first = await openStore(dir);
    await storedIn(first.store, 'ex_1', 'QUEUED');
    await storedIn(first.store, 'ex_2', 'QUEUED');
    await storedIn(first.store, 'ex_3', 'OFFERED');
    first.database.close();

    const second = await openStore(dir);
    expect(await queueLength(second.store)).toBe(2);
    // Only a hand-edited database can disagree with its records: the next start puts it right.
    second.database.db.exec('UPDATE queue_length SET jobs = 7');
    second.database.close();

    const third = await openStore(dir);
    expect(await queueLength(third.store)).toBe(2);
  });

  it('follows a job through the use cases', async () => {
    const { core, now } = await buildTestCore();

    await expectLengthToFollowUseCases(core, (seconds) => {
      now.value = new Date(now.value.getTime() + seconds * 1000);
    });
  });
});
