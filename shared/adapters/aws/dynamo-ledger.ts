// CapacityLedger on DynamoDB: one counter item for the budget and one item per reservation,
// changed together in a transaction. Reserving is conditional on the counter staying within
// the budget and on the reservation not existing; releasing on the reservation existing.
// So concurrent dispatchers cannot overshoot, and each execution is released exactly once.
import { type DynamoDBClient, TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import {
  type DynamoDBDocumentClient,
  GetCommand,
  QueryCommand,
  TransactWriteCommand,
} from '@aws-sdk/lib-dynamodb';
import type { CapacityBudget, CapacityDemand, CapacityLedger } from '../../ports.ts';
import { realSleep, retryingConflicts, type Sleep } from './conflicts.ts';
import { documentClient } from './dynamo-store.ts';
import { INDEXES, SORT_KEY, TABLE_KEY } from './table.ts';

const TOTAL_KEY = 'capacity#total';
const RESERVATION_PREFIX = 'capacity#reservation#';
/** Reservations are listed through the byState index under this pseudo-state. */
const RESERVATION_PARTITION = 'capacity-reservation';

/** CPU is counted in units of 1/1024 vCPU so the sums are whole numbers. */
const cpuUnits = (cpu: number): number => Math.round(cpu * 1024);

export class DynamoCapacityLedger implements CapacityLedger {
  private readonly db: DynamoDBDocumentClient;
  private readonly sleep: Sleep;

  constructor(
    private readonly tableName: string,
    client?: DynamoDBClient,
    sleep?: Sleep,
  ) {
    this.db = documentClient(client);
    this.sleep = sleep ?? realSleep;
  }

  async reserve(executionId: string, demand: CapacityDemand, budget: CapacityBudget): Promise<boolean> {
    const cpu = cpuUnits(demand.cpu);
    const memory = Math.ceil(demand.memoryMiB);
    // The condition below lets the very first reservation through unchecked (there is no
    // counter yet), so a demand the whole budget cannot hold is refused here.
    if (
      cpu > cpuUnits(budget.maxCpu) ||
      memory > Math.floor(budget.maxMemoryMiB) ||
      budget.maxConcurrency < 1
    ) {
      return false;
    }
    try {
      await this.transact(
        new TransactWriteCommand({
          TransactItems: [
            {
              Put: {
                TableName: this.tableName,
                Item: {
                  [TABLE_KEY]: `${RESERVATION_PREFIX}${executionId}`,
                  state: RESERVATION_PARTITION,
                  [SORT_KEY]: executionId,
                  executionId,
                  cpuUnits: cpu,
                  memoryMiB: memory,
                },
                ConditionExpression: 'attribute_not_exists(#pk)',
                ExpressionAttributeNames: { '#pk': TABLE_KEY },
              },
            },
            {
              Update: {
                TableName: this.tableName,
                Key: { [TABLE_KEY]: TOTAL_KEY },
                UpdateExpression: 'ADD #cpu :cpu, #memory :memory, #tasks :one',
                ConditionExpression:
                  'attribute_not_exists(#tasks) OR (#cpu <= :cpuRoom AND #memory <= :memoryRoom AND #tasks <= :taskRoom)',
                ExpressionAttributeNames: { '#cpu': 'cpuUnits', '#memory': 'memoryMiB', '#tasks': 'tasks' },
                ExpressionAttributeValues: {
                  ':cpu': cpu,
                  ':memory': memory,
                  ':one': 1,
                  ':cpuRoom': cpuUnits(budget.maxCpu) - cpu,
                  ':memoryRoom': Math.floor(budget.maxMemoryMiB) - memory,
                  ':taskRoom': budget.maxConcurrency - 1,
                },
              },
            },
          ],
        }),
      );
      return true;
    } catch (error) {
      if (!(error instanceof TransactionCanceledException)) throw error;
      const [reservation, total] = error.CancellationReasons ?? [];
      if (reservation?.Code === 'ConditionalCheckFailed') return true; // already held
      if (total?.Code === 'ConditionalCheckFailed') return false;
      throw error;
    }
  }

  async release(executionId: string): Promise<void> {
    const key = { [TABLE_KEY]: `${RESERVATION_PREFIX}${executionId}` };
    const held = await this.db.send(
      new GetCommand({ TableName: this.tableName, Key: key, ConsistentRead: true }),
    );
    const item = held.Item as { cpuUnits?: number; memoryMiB?: number } | undefined;
    if (item === undefined) return;
    try {
      await this.transact(
        new TransactWriteCommand({
          TransactItems: [
            {
              Delete: {
                TableName: this.tableName,
                Key: key,
                ConditionExpression: 'attribute_exists(#pk)',
                ExpressionAttributeNames: { '#pk': TABLE_KEY },
              },
            },
            {
              Update: {
                TableName: this.tableName,
                Key: { [TABLE_KEY]: TOTAL_KEY },
                UpdateExpression: 'ADD #cpu :cpu, #memory :memory, #tasks :one',
                ExpressionAttributeNames: { '#cpu': 'cpuUnits', '#memory': 'memoryMiB', '#tasks': 'tasks' },
                ExpressionAttributeValues: {
                  ':cpu': -(item.cpuUnits ?? 0),
                  ':memory': -(item.memoryMiB ?? 0),
                  ':one': -1,
                },
              },
            },
          ],
        }),
      );
    } catch (error) {
      // Released by someone else between the read and the write: released once, as promised.
      if (
        error instanceof TransactionCanceledException &&
        error.CancellationReasons?.[0]?.Code === 'ConditionalCheckFailed'
      ) {
        return;
      }
      throw error;
    }
  }

  /**
   * Every reservation and release writes the one counter item, so concurrent dispatchers'
   * transactions collide: they are tried again, since the condition is decided afresh each time.
   */
  private async transact(command: TransactWriteCommand): Promise<void> {
    await retryingConflicts(() => this.db.send(command), this.sleep);
  }

  async holders(): Promise<readonly string[]> {
    const holders: string[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const reply = await this.db.send(
        new QueryCommand({
          TableName: this.tableName,
          IndexName: INDEXES.byState.name,
          KeyConditionExpression: '#state = :state',
          ExpressionAttributeNames: { '#state': INDEXES.byState.partitionKey },
          ExpressionAttributeValues: { ':state': RESERVATION_PARTITION },
          ...(start === undefined ? {} : { ExclusiveStartKey: start }),
        }),
      );
      for (const item of reply.Items ?? []) holders.push(String(item.executionId));
      start = reply.LastEvaluatedKey;
    } while (start !== undefined);
    return holders;
  }

  /** The totals now held, for the node description and tests. */
  async totals(): Promise<{ cpu: number; memoryMiB: number; tasks: number }> {
    const reply = await this.db.send(
      new GetCommand({ TableName: this.tableName, Key: { [TABLE_KEY]: TOTAL_KEY }, ConsistentRead: true }),
    );
    const item = (reply.Item ?? {}) as { cpuUnits?: number; memoryMiB?: number; tasks?: number };
    return { cpu: (item.cpuUnits ?? 0) / 1024, memoryMiB: item.memoryMiB ?? 0, tasks: item.tasks ?? 0 };
  }
}
