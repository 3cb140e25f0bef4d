// The node's recent past in the deployment's table: one item holding a sample a minute for the
// last few hours, written by the sweeper (a read, then a write conditional on what was read, so
// two sweeps at once never lose each other's samples silently: the later one skips its sample).
import { ConditionalCheckFailedException, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { type DynamoDBDocumentClient, GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import type { NodeHistory, NodeSample } from '../../ports.ts';
import { documentClient } from './dynamo-store.ts';
import { TABLE_KEY } from './table.ts';

/** The item's key: no execution id looks like it. */
export const HISTORY_KEY = 'node#history';
const MINUTE_MS = 60_000;
const KEPT_MS = 3 * 3600_000;

/** [epoch ms, running, queued], a minute each. */
type Stored = readonly [number, number, number];

export class DynamoNodeHistory implements NodeHistory {
  private readonly db: DynamoDBDocumentClient;

  constructor(
    private readonly table: string,
    client?: DynamoDBClient,
  ) {
    this.db = documentClient(client);
  }

  private async read(): Promise<{ samples: Stored[]; version: number | undefined }> {
    const reply = await this.db.send(
      new GetCommand({ TableName: this.table, Key: { [TABLE_KEY]: HISTORY_KEY } }),
    );
    return {
      samples: (reply.Item?.samples as Stored[] | undefined) ?? [],
      version: reply.Item?.version as number | undefined,
    };
  }

  async record(sample: NodeSample): Promise<void> {
    const at = Date.parse(sample.at);
    const { samples, version } = await this.read();
    const minute = Math.floor(at / MINUTE_MS);
    const kept = samples.filter(([t]) => t >= at - KEPT_MS && Math.floor(t / MINUTE_MS) !== minute);
    kept.push([at, sample.runningJobs, sample.queuedJobs]);
    kept.sort((a, b) => a[0] - b[0]);
    try {
      await this.db.send(
        new PutCommand({
          TableName: this.table,
          Item: { [TABLE_KEY]: HISTORY_KEY, samples: kept, version: (version ?? 0) + 1 },
          ...(version === undefined
            ? {
                ConditionExpression: 'attribute_not_exists(#k)',
                ExpressionAttributeNames: { '#k': TABLE_KEY },
              }
            : {
                ConditionExpression: '#v = :v',
                ExpressionAttributeNames: { '#v': 'version' },
                ExpressionAttributeValues: { ':v': version },
              }),
        }),
      );
    } catch (error) {
      // Another sweep wrote first: its sample stands for this minute.
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
    }
  }

  async since(since: Date): Promise<readonly NodeSample[]> {
    const { samples } = await this.read();
    return samples
      .filter(([t]) => t >= since.getTime())
      .map(([t, running, queued]) => ({
        at: new Date(t).toISOString(),
        runningJobs: running,
        queuedJobs: queued,
      }));
  }
}
