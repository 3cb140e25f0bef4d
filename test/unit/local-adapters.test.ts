import { describe, expect, it } from 'vitest';
import { FileExecutionStore } from '../../shared/adapters/local/file-store.ts';
import { LocalQueue } from '../../shared/adapters/local/local-queue.ts';
import { InvalidTransition, StaleExecution, ValidationError } from '../../shared/errors.ts';
import { moveTo } from '../../shared/use-cases/transitions.ts';
import { offeredExecution } from '../support/fixtures.ts';
import { tempDir } from '../support/server.ts';

const execution = offeredExecution;

describe('local queue (SQS semantics)', () => {
  it('hides a received message for the visibility timeout, then delivers it again', async () => {
    const clock = { t: 0 };
    const queue = new LocalQueue({ visibilitySeconds: 10, maxReceives: 3, now: () => clock.t });
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
    const queue = new LocalQueue({ visibilitySeconds: 1, maxReceives: 2, now: () => clock.t });
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

  it('wakes a waiting receiver when a message arrives', async () => {
    const queue = new LocalQueue({ visibilitySeconds: 30, maxReceives: 3 });
    const waiting = queue.receive(1, 5_000);
    await queue.send({ executionId: 'now' });
    expect(await waiting).toHaveLength(1);
  });
});

describe('file execution store', () => {
  it('writes only on the version it was given, and only along the transition table', async () => {
    const store = await FileExecutionStore.open(await tempDir());
    const offered = execution('ex_1', '2030-01-01T00:00:00.000Z');
    await store.create(offered);
    const queued = moveTo(offered, 'QUEUED', new Date());

    await store.update(queued, 1);
    await expect(store.update(moveTo(offered, 'EXPIRED', new Date()), 1)).rejects.toBeInstanceOf(
      StaleExecution,
    );
    await expect(store.update({ ...queued, state: 'OFFERED', version: 3 }, 2)).rejects.toBeInstanceOf(
      InvalidTransition,
    );
    expect((await store.get('ex_1'))?.state).toBe('QUEUED');
    await expect(store.create(offered)).rejects.toBeInstanceOf(StaleExecution);
  });

  it('survives a restart with every write', async () => {
    const dir = await tempDir();
    const store = await FileExecutionStore.open(dir);
    const offered = execution('ex_1', '2030-01-01T00:00:00.000Z');
    await store.create(offered);
    await store.update(moveTo(offered, 'QUEUED', new Date()), 1);
    await store.create(execution('ex_2', '2030-01-01T00:00:01.000Z'));
    await store.close();

    const reopened = await FileExecutionStore.open(dir);
    expect((await reopened.get('ex_1'))?.state).toBe('QUEUED');
    expect((await reopened.list({ limit: 10 })).items.map((e) => e.id)).toEqual(['ex_2', 'ex_1']);
  });

  it('pages newest first by owner and state, and refuses cursors it did not issue', async () => {
    const store = await FileExecutionStore.open(await tempDir());
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
});
