// The capacity ledger on DynamoDB: the hard budget every dispatcher reserves from, against
// the emulator. Each test gets its own table, so the totals start from nothing.
import http from 'node:http';
import { DynamoDBClient, TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import { beforeEach, describe, expect, it } from 'vitest';
import { DynamoCapacityLedger } from '../../shared/adapters/aws/dynamo-ledger.ts';
import type { CapacityBudget } from '../../shared/ports.ts';
import { type AwsEnvironment, clientConfig, createAwsEnvironment } from '../support/aws.ts';

const budget: CapacityBudget = { maxCpu: 4, maxMemoryMiB: 64 * 1024, maxConcurrency: 10 };
const oneVcpu = { cpu: 1, memoryMiB: 2048 };

/**
 * DynamoDB runs each transaction in isolation; moto server does not (it checks conditions and
 * writes in whichever request thread gets there, and rolls a failed transaction back by
 * restoring a copy of the table). One connection makes the emulator take the ledger's
 * concurrent requests one at a time, as DynamoDB's isolation would order them.
 */
function serialisedClient(): DynamoDBClient {
  return new DynamoDBClient({
    ...clientConfig('dynamodb'),
    requestHandler: { httpAgent: new http.Agent({ keepAlive: true, maxSockets: 1 }) },
  });
}

describe('DynamoDB capacity ledger', () => {
  let aws: AwsEnvironment;
  let ledger: DynamoCapacityLedger;

  beforeEach(async () => {
    aws = await createAwsEnvironment();
    ledger = new DynamoCapacityLedger(aws.tableName, serialisedClient());
  });

  it('lets exactly as many concurrent reservations through as the vCPU budget holds', async () => {
    const ids = Array.from({ length: 12 }, (_, i) => `ex-${i}`);

    const granted = await Promise.all(ids.map((id) => ledger.reserve(id, oneVcpu, budget)));

    const winners = ids.filter((_, i) => granted[i]);
    expect(winners).toHaveLength(4);
    expect(await ledger.totals()).toEqual({ cpu: 4, memoryMiB: 4 * 2048, tasks: 4 });
    expect([...(await ledger.holders())].sort()).toEqual([...winners].sort());
  });

  it('counts a holder once however often it reserves', async () => {
    expect(await ledger.reserve('ex-a', oneVcpu, budget)).toBe(true);
    expect(await ledger.reserve('ex-a', oneVcpu, budget)).toBe(true);
    expect(await Promise.all([1, 2, 3].map(() => ledger.reserve('ex-a', oneVcpu, budget)))).toEqual([
      true,
      true,
      true,
    ]);

    expect(await ledger.totals()).toEqual({ cpu: 1, memoryMiB: 2048, tasks: 1 });
    expect(await ledger.holders()).toEqual(['ex-a']);
  });

  it('gives a reservation back once, and ignores what it never held', async () => {
    await ledger.reserve('ex-a', { cpu: 2, memoryMiB: 4096 }, budget);
    await ledger.reserve('ex-b', { cpu: 0.25, memoryMiB: 512 }, budget);

    await ledger.release('ex-a');
    await ledger.release('ex-a');
    await Promise.all([ledger.release('ex-b'), ledger.release('ex-b')]);
    await ledger.release('ex-never-reserved');

    expect(await ledger.totals()).toEqual({ cpu: 0, memoryMiB: 0, tasks: 0 });
    expect(await ledger.holders()).toEqual([]);
    // What was given back can be taken again, up to the whole budget.
    expect(await ledger.reserve('ex-c', { cpu: 4, memoryMiB: 8192 }, budget)).toBe(true);
  });

  it('lists exactly the executions holding a reservation', async () => {
    for (const id of ['ex-1', 'ex-2', 'ex-3'])
      await ledger.reserve(id, { cpu: 0.5, memoryMiB: 1024 }, budget);
    await ledger.release('ex-2');

    expect([...(await ledger.holders())].sort()).toEqual(['ex-1', 'ex-3']);
  });

  it('enforces the memory budget', async () => {
    const small = { maxCpu: 16, maxMemoryMiB: 8192, maxConcurrency: 10 };

    expect(await ledger.reserve('ex-1', { cpu: 1, memoryMiB: 6144 }, small)).toBe(true);
    expect(await ledger.reserve('ex-2', { cpu: 1, memoryMiB: 4096 }, small)).toBe(false);
    expect(await ledger.reserve('ex-3', { cpu: 1, memoryMiB: 2048 }, small)).toBe(true);

    expect(await ledger.totals()).toEqual({ cpu: 2, memoryMiB: 8192, tasks: 2 });
    expect([...(await ledger.holders())].sort()).toEqual(['ex-1', 'ex-3']);
  });

  it('enforces the number of tasks', async () => {
    const twoTasks = { maxCpu: 16, maxMemoryMiB: 64 * 1024, maxConcurrency: 2 };
    const tiny = { cpu: 0.25, memoryMiB: 512 };

    const granted = await Promise.all(
      ['ex-1', 'ex-2', 'ex-3', 'ex-4'].map((id) => ledger.reserve(id, tiny, twoTasks)),
    );

    expect(granted.filter(Boolean)).toHaveLength(2);
    expect(await ledger.totals()).toEqual({ cpu: 0.5, memoryMiB: 1024, tasks: 2 });
  });

  it('refuses a single demand larger than the whole budget, even as the first reservation', async () => {
    expect(await ledger.reserve('ex-huge', { cpu: 8, memoryMiB: 16384 }, budget)).toBe(false);
    expect(await ledger.reserve('ex-fat', { cpu: 1, memoryMiB: 128 * 1024 }, budget)).toBe(false);

    expect(await ledger.totals()).toEqual({ cpu: 0, memoryMiB: 0, tasks: 0 });
    expect(await ledger.holders()).toEqual([]);
  });

  it('tries again when its transaction collides with another dispatcher', async () => {
    // DynamoDB cancels a transaction that touches an item another one is writing; the emulator
    // serialises them, so the collision is injected in front of the first two writes.
    const client = serialisedClient();
    let collisions = 2;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'TransactWriteItemsCommand' && collisions > 0) {
          collisions--;
          throw new TransactionCanceledException({
            message: 'Transaction cancelled, please refer cancellation reasons for specific reasons',
            $metadata: { httpStatusCode: 400 },
            CancellationReasons: [{ Code: 'None' }, { Code: 'TransactionConflict' }],
          });
        }
        return next(args);
      },
      { step: 'initialize' },
    );
    const pauses: number[] = [];
    const contended = new DynamoCapacityLedger(aws.tableName, client, async (ms) => {
      pauses.push(ms);
    });

    expect(await contended.reserve('ex-1', oneVcpu, budget)).toBe(true);

    expect(collisions).toBe(0);
    expect(pauses).toHaveLength(2);
    expect(await ledger.totals()).toEqual({ cpu: 1, memoryMiB: 2048, tasks: 1 });
    collisions = 1;
    await contended.release('ex-1');
    expect(await ledger.totals()).toEqual({ cpu: 0, memoryMiB: 0, tasks: 0 });
  });
});
