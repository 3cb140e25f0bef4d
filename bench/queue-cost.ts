// The cost of one bid and one dispatch as the queue grows: DynamoDB calls and what they read,
// counted by a middleware on the client Ferry is given, with 10, 1,000 and 10,000 executions
// QUEUED (seeded with BatchWriteItem, not counted). Flat is the goal: a decision reads the
// head of the queue, not the queue.
//
// Run directly against a running emulator: node --import tsx bench/queue-cost.ts <endpoint>
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BatchWriteCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { DynamoExecutionStore, documentClient } from '../shared/adapters/aws/dynamo-store.ts';
import { QUEUE_LENGTH_ATTRIBUTE, QUEUE_LENGTH_KEY, TABLE_KEY } from '../shared/adapters/aws/table.ts';
import { executionIds } from '../shared/adapters/system.ts';
import type { Execution } from '../shared/domain/execution.ts';
import { silentLogger } from '../shared/logger.ts';
import { buildAwsCore } from '../shared/runtime/aws.ts';
import { askForBid, submitJob } from '../shared/use-cases/bids.ts';
import { dispatch } from '../shared/use-cases/dispatch.ts';
import { awsClients, awsConfig, createAwsEnvironment } from '../test/support/aws.ts';

export const QUEUE_LENGTHS = [10, 1_000, 10_000] as const;

export interface Reads {
  /** DynamoDB calls made. */
  calls: number;
  /** Records handed back (Items and Item). */
  records: number;
  /** Index entries a COUNT query went over without returning them. */
  counted: number;
}

export interface QueueCostRow {
  readonly queued: number;
  readonly seedSeconds: number;
  readonly bid: Reads;
  readonly dispatch: Reads & { readonly outcome: string };
}

const job = { image: 'public.ecr.aws/docker/library/alpine:3.20', command: ['true'], timeoutSeconds: 60 };

/** Counts what every DynamoDB call reads into `reads`. */
function countReads(client: DynamoDBClient, reads: Reads): void {
  client.middlewareStack.add(
    (next) => async (args) => {
      const result = await next(args);
      const output = result.output as { Items?: unknown[]; Item?: unknown; Count?: number };
      const select = (args.input as { Select?: string }).Select;
      reads.calls += 1;
      reads.records += (output.Items?.length ?? 0) + (output.Item === undefined ? 0 : 1);
      if (select === 'COUNT') reads.counted += output.Count ?? 0;
      return result;
    },
    { step: 'initialize', name: 'ferryCountReads' },
  );
}

/**
 * Writes `count` QUEUED executions, 25 to a BatchWriteItem, a few batches at a time, and adds
 * them to the queue length item, as the store's own writes would have.
 */
async function seed(
  client: DynamoDBClient,
  store: DynamoExecutionStore,
  tableName: string,
  template: Execution,
  count: number,
): Promise<void> {
  const ids = executionIds();
  const items = Array.from({ length: count }, (_, i) => {
    const at = new Date(Date.parse('2030-01-01T00:00:00.000Z') + i * 1000).toISOString();
    const execution: Execution = { ...template, id: ids.next(), createdAt: at, updatedAt: at, queuedAt: at };
    return store.itemOf(execution) as unknown as Record<string, unknown>;
  });
  const batches: (typeof items)[] = [];
  for (let i = 0; i < items.length; i += 25) batches.push(items.slice(i, i + 25));
  const db = documentClient(client);
  const worker = async () => {
    for (let batch = batches.shift(); batch !== undefined; batch = batches.shift()) {
      let pending = batch.map((Item) => ({ PutRequest: { Item } }));
      while (pending.length > 0) {
        const reply = await db.send(new BatchWriteCommand({ RequestItems: { [tableName]: pending } }));
        pending = (reply.UnprocessedItems?.[tableName] ?? []) as typeof pending;
      }
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  await db.send(
    new UpdateCommand({
      TableName: tableName,
      Key: { [TABLE_KEY]: QUEUE_LENGTH_KEY },
      UpdateExpression: 'ADD #jobs :count',
      ExpressionAttributeNames: { '#jobs': QUEUE_LENGTH_ATTRIBUTE },
      ExpressionAttributeValues: { ':count': count },
    }),
  );
}

async function measure(endpoint: string, queued: number): Promise<QueueCostRow> {
  const aws = await createAwsEnvironment(endpoint);
  const clients = awsClients(endpoint);
  const reads: Reads = { calls: 0, records: 0, counted: 0 };
  countReads(clients.dynamodb, reads);
  const core = buildAwsCore(awsConfig(aws), clients, silentLogger);
  const store = new DynamoExecutionStore({
    tableName: aws.tableName,
    retentionDays: 7,
    client: aws.clients.dynamodb,
  });

  // One real submission makes the template, and is the job dispatched below: the oldest.
  const first = await submitJob(core, 'bench', job);
  const started = performance.now();
  await seed(aws.clients.dynamodb, store, aws.tableName, first, queued - 1);
  const seedSeconds = (performance.now() - started) / 1000;

  const take = (): Reads => {
    const taken = { ...reads };
    Object.assign(reads, { calls: 0, records: 0, counted: 0 });
    return taken;
  };
  take();
  await askForBid(core, 'bench', job);
  const bid = take();
  const outcome = await dispatch(core, { executionId: first.id, token: first.dispatchToken });
  return { queued, seedSeconds, bid, dispatch: { ...take(), outcome: outcome.outcome } };
}

/** Measures each queue length on a fresh environment of the emulator at `endpoint`. */
export async function benchQueueCost(endpoint: string): Promise<QueueCostRow[]> {
  const rows: QueueCostRow[] = [];
  for (const queued of QUEUE_LENGTHS) rows.push(await measure(endpoint, queued));
  return rows;
}

/** The bench as lines of a table, for a terminal. */
export function formatQueueCost(rows: readonly QueueCostRow[]): string[] {
  const header = [
    'queued',
    'bid: calls',
    'records',
    'counted',
    'dispatch: calls',
    'records',
    'counted',
    'seeded in',
  ];
  const cells = rows.map((r) => [
    r.queued.toLocaleString('en-US'),
    String(r.bid.calls),
    String(r.bid.records),
    String(r.bid.counted),
    String(r.dispatch.calls),
    String(r.dispatch.records),
    String(r.dispatch.counted),
    `${r.seedSeconds.toFixed(1)} s`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)));
  const line = (c: readonly string[]) =>
    c
      .map((cell, i) => cell.padStart(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [
    line(header),
    widths.map((w) => '─'.repeat(w)).join('  '),
    ...cells.map(line),
    '',
    'calls: DynamoDB calls; records: items returned; counted: index entries a COUNT query went over',
    `(keys only, none returned). Dispatch outcomes: ${rows.map((r) => r.dispatch.outcome).join(', ')}.`,
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const endpoint = process.argv[2] ?? process.env.AWS_ENDPOINT_URL;
  if (endpoint === undefined || endpoint === '') {
    console.error(
      'usage: node --import tsx bench/queue-cost.ts <emulator endpoint, e.g. http://127.0.0.1:5000>',
    );
    process.exit(2);
  }
  console.log(`DynamoDB reads per bid and per dispatch by queue length (against ${endpoint})`);
  for (const text of formatQueueCost(await benchQueueCost(endpoint))) console.log(text);
}
