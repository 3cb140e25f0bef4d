// The shape of Ferry's DynamoDB table: one table holds executions, idempotency keys, the
// capacity ledger and the queue length. The CDK construct and the test harness both create it
// from this.

export const TABLE_KEY = 'pk';
export const TTL_ATTRIBUTE = 'expiresAtEpoch';

/** Sort key of the listing indexes: creation time then id, so pages come newest first and never tie. */
export const SORT_KEY = 'sortKey';

/** Set on a QUEUED execution only, so the queue indexes hold queued executions and nothing else. */
export const QUEUED_PARTITION = 'queued';
/** Priority (highest first), then queue time, then id: the order the dispatcher considers jobs in. */
export const QUEUE_ORDER = 'queueOrder';
/** Queue time then id: the oldest queued job first, for the starvation bound. */
export const QUEUE_AGE = 'queueAge';

/**
 * The item that counts QUEUED executions, beside the capacity ledger's totals. It carries no
 * index attribute, so no index holds it; the count is in QUEUE_LENGTH_ATTRIBUTE.
 */
export const QUEUE_LENGTH_KEY = 'queue#length';
export const QUEUE_LENGTH_ATTRIBUTE = 'jobs';

interface IndexShape {
  readonly name: string;
  readonly partitionKey: string;
  readonly sortKey: string;
  readonly projection: 'ALL' | 'KEYS_ONLY';
}

export const INDEXES = {
  /** All of one caller's executions. */
  byOwner: { name: 'byOwner', partitionKey: 'owner', sortKey: SORT_KEY, projection: 'ALL' },
  /** One caller's executions in one state. */
  byOwnerState: { name: 'byOwnerState', partitionKey: 'ownerState', sortKey: SORT_KEY, projection: 'ALL' },
  /** Every execution in one state (sweeper, recovery). */
  byState: { name: 'byState', partitionKey: 'state', sortKey: SORT_KEY, projection: 'ALL' },
  /** The head of the queue, read a few at a time (dispatcher, bids). */
  queueHead: { name: 'queueHead', partitionKey: QUEUED_PARTITION, sortKey: QUEUE_ORDER, projection: 'ALL' },
  /** The queue by age, keys only: the oldest queued job. */
  queueAge: { name: 'queueAge', partitionKey: QUEUED_PARTITION, sortKey: QUEUE_AGE, projection: 'KEYS_ONLY' },
} as const satisfies Record<string, IndexShape>;

/** The CreateTable input for the table, for tests and local emulators. */
export function tableDefinition(tableName: string) {
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST' as const,
    AttributeDefinitions: [
      { AttributeName: TABLE_KEY, AttributeType: 'S' as const },
      { AttributeName: SORT_KEY, AttributeType: 'S' as const },
      ...[...new Set(Object.values(INDEXES).flatMap((index) => [index.partitionKey, index.sortKey]))]
        .filter((name) => name !== SORT_KEY)
        .map((name) => ({ AttributeName: name, AttributeType: 'S' as const })),
    ],
    KeySchema: [{ AttributeName: TABLE_KEY, KeyType: 'HASH' as const }],
    GlobalSecondaryIndexes: Object.values(INDEXES).map((index) => ({
      IndexName: index.name,
      KeySchema: [
        { AttributeName: index.partitionKey, KeyType: 'HASH' as const },
        { AttributeName: index.sortKey, KeyType: 'RANGE' as const },
      ],
      Projection: { ProjectionType: index.projection },
    })),
  };
}
