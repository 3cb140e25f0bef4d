// The queue length on DynamoDB, against the emulator: one item beside the capacity ledger's
// totals, changed in the same transaction as every write that moves an execution into or out
// of QUEUED, and read with one GetItem. Each test gets its own table, so lengths start at zero.
import {
  ConditionalCheckFailedException,
  TransactionCanceledException,
  TransactionConflictException,
} from '@aws-sdk/client-dynamodb';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { beforeEach, describe, expect, it } from 'vitest';
import { DynamoExecutionStore, documentClient } from '../../shared/adapters/aws/dynamo-store.ts';
import { executionIds } from '../../shared/adapters/system.ts';
import { StaleExecution } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import { buildAwsCore } from '../../shared/runtime/aws.ts';
import { amend, moveTo } from '../../shared/use-cases/transitions.ts';
import { type AwsEnvironment, awsConfig, createAwsEnvironment, serialisedClient } from '../support/aws.ts';
import {
  expectedChange,
  expectLengthToFollowUseCases,
  queueLength,
  storedIn,
  TRANSITIONS,
} from '../support/queue-length.ts';

const ids = executionIds();

/** The error a promise rejected with. */
async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected the write to fail');
    },
    (error: unknown) => error,
  );
}

describe('DynamoDB queue length', () => {
  let aws: AwsEnvironment;
  let store: DynamoExecutionStore;

  beforeEach(async () => {
    aws = await createAwsEnvironment();
    store = new DynamoExecutionStore({
      tableName: aws.tableName,
      retentionDays: 7,
      client: serialisedClient(),
    });
  });

  it('counts a record created straight into QUEUED, and no other', async () => {
    await storedIn(store, ids.next(), 'OFFERED');
    await storedIn(store, ids.next(), 'DECLINED');
    expect(await queueLength(store)).toBe(0);

    const queued = await storedIn(store, ids.next(), 'QUEUED');
    expect(await queueLength(store)).toBe(1);

    // A second create of the same id (a retried submission) loses its condition: counted once.
    const error = await failure(store.create(queued));
    expect(error).toBeInstanceOf(StaleExecution);
    expect((error as StaleExecution).cause).toBeInstanceOf(TransactionCanceledException);
    expect(await queueLength(store)).toBe(1);
  });

  it.each(TRANSITIONS)('follows %s → %s', async (from, to) => {
    const execution = await storedIn(store, ids.next(), from);
    const before = await queueLength(store);

    await store.update(moveTo(execution, to, new Date()), execution);

    expect((await store.get(execution.id))?.state).toBe(to);
    expect((await queueLength(store)) - before).toBe(expectedChange(from, to));
  });

  it('keeps the length when a queued record is rewritten and stays queued', async () => {
    const queued = await storedIn(store, ids.next(), 'QUEUED');

    await store.update(amend(queued, new Date(), { dispatchToken: 'renewed' }), queued);

    expect(await queueLength(store)).toBe(1);
  });

  it('moves once when two writers race from the same read', async () => {
    const offered = await storedIn(store, ids.next(), 'OFFERED');

    const accepts = await Promise.allSettled([
      store.update(moveTo(offered, 'QUEUED', new Date()), offered),
      store.update(moveTo(offered, 'QUEUED', new Date()), offered),
    ]);

    expect(accepts.map((a) => a.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(accepts.find((a) => a.status === 'rejected')?.reason).toBeInstanceOf(StaleExecution);
    expect(await queueLength(store)).toBe(1);

    // A dispatcher and a cancel, both from the QUEUED record: one takes it off the queue.
    const queued = (await store.get(offered.id)) ?? offered;
    const leaving = await Promise.allSettled([
      store.update(moveTo(queued, 'LAUNCHING', new Date()), queued),
      store.update(moveTo(queued, 'CANCELLED', new Date()), queued),
    ]);

    expect(leaving.map((a) => a.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(leaving.find((a) => a.status === 'rejected')?.reason).toBeInstanceOf(StaleExecution);
    expect(await queueLength(store)).toBe(0);
  });

  it('changes nothing for a stale duplicate or a write from an older read', async () => {
    const offered = await storedIn(store, ids.next(), 'OFFERED');
    const queued = moveTo(offered, 'QUEUED', new Date());
    await store.update(queued, offered);

    // The same accept delivered again: its condition names a version that is gone.
    const duplicate = await failure(store.update(queued, offered));
    expect(duplicate).toBeInstanceOf(StaleExecution);
    expect((duplicate as StaleExecution).cause).toBeInstanceOf(TransactionCanceledException);
    expect(await queueLength(store)).toBe(1);

    await store.update(moveTo(queued, 'LAUNCHING', new Date()), queued);
    expect(await queueLength(store)).toBe(0);

    // Out of order: a cancel decided on the QUEUED record arrives after the launch.
    const late = await failure(store.update(moveTo(queued, 'CANCELLED', new Date()), queued));
    expect(late).toBeInstanceOf(StaleExecution);
    expect(await queueLength(store)).toBe(0);
    // A stale write that would keep it queued (a sweeper's re-send) fails as a plain conditional put.
    const stale = await failure(store.update(amend(queued, new Date(), { dispatchToken: 'late' }), queued));
    expect(stale).toBeInstanceOf(StaleExecution);
    expect((stale as StaleExecution).cause).toBeInstanceOf(ConditionalCheckFailedException);
    expect((await store.get(offered.id))?.state).toBe('LAUNCHING');
  });

  it('never goes below zero when a record was queued around the store', async () => {
    // As a bulk load (or a table from before the length was kept) leaves it: queued, not counted.
    const offered = await storedIn(store, ids.next(), 'OFFERED');
    const queued = moveTo(offered, 'QUEUED', new Date());
    await documentClient(aws.clients.dynamodb).send(
      new PutCommand({ TableName: aws.tableName, Item: store.itemOf(queued) }),
    );
    expect(await queueLength(store)).toBe(0);

    await store.update(moveTo(queued, 'CANCELLED', new Date()), queued);

    expect((await store.get(offered.id))?.state).toBe('CANCELLED');
    expect(await queueLength(store)).toBe(0);
    // The write still had to hold its own condition.
    await expect(store.update(moveTo(queued, 'LAUNCHING', new Date()), queued)).rejects.toBeInstanceOf(
      StaleExecution,
    );
    await storedIn(store, ids.next(), 'QUEUED');
    expect(await queueLength(store)).toBe(1);
  });

  it('tries again when its write collides with another transaction', async () => {
    // DynamoDB refuses a write to an item another transaction holds; the emulator serialises
    // them, so the collisions are injected in front of the first tries.
    const client = serialisedClient();
    const collisions = { transact: 1, put: 1 };
    client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'TransactWriteItemsCommand' && collisions.transact > 0) {
          collisions.transact--;
          throw new TransactionCanceledException({
            message: 'Transaction cancelled, please refer cancellation reasons for specific reasons',
            $metadata: { httpStatusCode: 400 },
            CancellationReasons: [{ Code: 'TransactionConflict' }, { Code: 'None' }],
          });
        }
        if (context.commandName === 'PutItemCommand' && collisions.put > 0) {
          collisions.put--;
          throw new TransactionConflictException({
            message: 'Transaction is ongoing for the item',
            $metadata: { httpStatusCode: 400 },
          });
        }
        return next(args);
      },
      { step: 'initialize' },
    );
    const contended = new DynamoExecutionStore({ tableName: aws.tableName, retentionDays: 7, client });

    const queued = await storedIn(contended, ids.next(), 'QUEUED');
    await contended.update(amend(queued, new Date(), { dispatchToken: 'renewed' }), queued);

    expect(collisions).toEqual({ transact: 0, put: 0 });
    expect(await queueLength(store)).toBe(1);
  });

  it('follows a job through the use cases, with the whole AWS core', async () => {
    const now = { value: new Date() };
    const core = {
      ...buildAwsCore(awsConfig(aws), { ...aws.clients, dynamodb: serialisedClient() }, silentLogger),
      clock: { now: () => now.value },
    };

    await expectLengthToFollowUseCases(core, (seconds) => {
      now.value = new Date(now.value.getTime() + seconds * 1000);
    });
  });
});
