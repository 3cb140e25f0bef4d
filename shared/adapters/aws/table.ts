// The shape of Ferry's DynamoDB table: one table holds executions, idempotency keys and the
// capacity ledger. The CDK construct and the test harness both create it from this.

export const TABLE_KEY = 'pk';
export const TTL_ATTRIBUTE = 'expiresAtEpoch';

/** Sort key of every index: creation time then id, so pages come newest first and never tie. */
export const SORT_KEY = 'sortKey';

export const INDEXES = {
  /** All of one caller's executions. */
  byOwner: { name: 'byOwner', partitionKey: 'owner' },
  /** One caller's executions in one state. */
  byOwnerState: { name: 'byOwnerState', partitionKey: 'ownerState' },
  /** Every execution in one state (dispatcher, sweeper). */
  byState: { name: 'byState', partitionKey: 'state' },
} as const;

/** The CreateTable input for the table, for tests and local emulators. */
export function tableDefinition(tableName: string) {
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST' as const,
    AttributeDefinitions: [
      { AttributeName: TABLE_KEY, AttributeType: 'S' as const },
      { AttributeName: SORT_KEY, AttributeType: 'S' as const },
      ...Object.values(INDEXES).map((index) => ({
        AttributeName: index.partitionKey,
        AttributeType: 'S' as const,
      })),
    ],
    KeySchema: [{ AttributeName: TABLE_KEY, KeyType: 'HASH' as const }],
    GlobalSecondaryIndexes: Object.values(INDEXES).map((index) => ({
      IndexName: index.name,
      KeySchema: [
        { AttributeName: index.partitionKey, KeyType: 'HASH' as const },
        { AttributeName: SORT_KEY, KeyType: 'RANGE' as const },
      ],
      Projection: { ProjectionType: 'ALL' as const },
    })),
  };
}
