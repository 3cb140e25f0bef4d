// ExecutionStore and IdempotencyStore on DynamoDB. Every write of an execution is
// conditional on the version read (a lost race becomes StaleExecution), and one that moves it
// into or out of the queue changes the queue length item in the same transaction; listing by
// owner and states goes through indexes, one query per state, merged newest first behind one cursor.
import {
  ConditionalCheckFailedException,
  DynamoDBClient,
  TransactionCanceledException,
} from '@aws-sdk/client-dynamodb';
import {
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  type QueryCommandInput,
  TransactWriteCommand,
} from '@aws-sdk/lib-dynamodb';
import type { Execution } from '../../domain/execution.ts';
import { EXECUTION_STATES, type ExecutionState, isExecutionState, isTerminal } from '../../domain/states.ts';
import { StaleExecution, ValidationError } from '../../errors.ts';
import type {
  ExecutionStore,
  IdempotencyRecord,
  IdempotencyStore,
  ListQuery,
  Page,
  QueueHead,
  StateCounts,
  StoredVersion,
} from '../../ports.ts';
import { retryingConflicts } from './conflicts.ts';
import {
  INDEXES,
  QUEUE_AGE,
  QUEUE_LENGTH_ATTRIBUTE,
  QUEUE_LENGTH_KEY,
  QUEUE_ORDER,
  QUEUED_PARTITION,
  SORT_KEY,
  TABLE_KEY,
  TTL_ATTRIBUTE,
} from './table.ts';

interface ExecutionItem {
  readonly pk: string;
  readonly owner: string;
  readonly state: ExecutionState;
  readonly ownerState: string;
  readonly sortKey: string;
  readonly version: number;
  readonly execution: Execution;
  readonly expiresAtEpoch?: number;
  /** Present while QUEUED only, so the queue indexes hold nothing else. */
  readonly queued?: string;
  readonly queueOrder?: string;
  readonly queueAge?: string;
}

/** The queue indexes' keys of a QUEUED execution; priority runs -100..100, so 1000 - p sorts highest first. */
function queueKeys(execution: Execution): Pick<ExecutionItem, 'queued' | 'queueOrder' | 'queueAge'> {
  if (execution.state !== 'QUEUED') return {};
  const queuedAt = execution.queuedAt ?? execution.createdAt;
  const rank = String(1000 - (execution.spec.priority ?? 0)).padStart(4, '0');
  return {
    [QUEUED_PARTITION]: 'QUEUED',
    [QUEUE_ORDER]: `${rank}#${queuedAt}#${execution.id}`,
    [QUEUE_AGE]: `${queuedAt}#${execution.id}`,
  };
}

/** How a write from `from` (nothing, for a new record) to `to` changes the queue's length. */
const queueMove = (from: ExecutionState | undefined, to: ExecutionState): number =>
  (to === 'QUEUED' ? 1 : 0) - (from === 'QUEUED' ? 1 : 0);

/** A conditional put of an execution's item, alone or as part of a transaction. */
interface ConditionalPut {
  readonly TableName: string;
  readonly Item: ExecutionItem;
  readonly ConditionExpression: string;
  readonly ExpressionAttributeNames: Record<string, string>;
  readonly ExpressionAttributeValues?: Record<string, unknown>;
}

/** Where each state's query stopped: the last sort key returned, or null for "from the start". */
type CursorState = Record<string, string | null>;

const ALL = '*';

export interface DynamoStoreOptions {
  readonly tableName: string;
  /** Finished executions are deleted by TTL this long after they end. */
  readonly retentionDays: number;
  readonly client?: DynamoDBClient;
}

export function documentClient(client?: DynamoDBClient): DynamoDBDocumentClient {
  return DynamoDBDocumentClient.from(client ?? new DynamoDBClient({}), {
    marshallOptions: { removeUndefinedValues: true },
  });
}

export class DynamoExecutionStore implements ExecutionStore {
  private readonly db: DynamoDBDocumentClient;
  private readonly table: string;

  constructor(private readonly options: DynamoStoreOptions) {
    this.db = documentClient(options.client);
    this.table = options.tableName;
  }

  /** The item an execution is stored as (also for seeding a table in bulk). */
  itemOf(execution: Execution): ExecutionItem {
    const ended = isTerminal(execution.state)
      ? Date.parse(execution.endedAt ?? execution.updatedAt)
      : undefined;
    return {
      pk: execution.id,
      owner: execution.owner,
      state: execution.state,
      ownerState: `${execution.owner}#${execution.state}`,
      sortKey: `${execution.createdAt}#${execution.id}`,
      version: execution.version,
      execution,
      ...queueKeys(execution),
      ...(ended === undefined
        ? {}
        : { [TTL_ATTRIBUTE]: Math.floor(ended / 1000) + this.options.retentionDays * 86400 }),
    };
  }

  async create(execution: Execution): Promise<void> {
    await this.write(
      {
        TableName: this.table,
        Item: this.itemOf(execution),
        ConditionExpression: 'attribute_not_exists(#pk)',
        ExpressionAttributeNames: { '#pk': TABLE_KEY },
      },
      queueMove(undefined, execution.state),
      (cause) => new StaleExecution(`execution ${execution.id} already exists`, { cause }),
    );
  }

  async get(id: string): Promise<Execution | undefined> {
    const reply = await this.db.send(
      new GetCommand({ TableName: this.table, Key: { [TABLE_KEY]: id }, ConsistentRead: true }),
    );
    return (reply.Item as ExecutionItem | undefined)?.execution;
  }

  async update(next: Execution, read: StoredVersion): Promise<void> {
    await this.write(
      {
        TableName: this.table,
        Item: this.itemOf(next),
        ConditionExpression: '#version = :version AND #state = :state',
        ExpressionAttributeNames: { '#version': 'version', '#state': 'state' },
        ExpressionAttributeValues: { ':version': read.version, ':state': read.state },
      },
      queueMove(read.state, next.state),
      (cause) =>
        new StaleExecution(
          `execution ${next.id} changed since it was read (version ${read.version}, ${read.state})`,
          { cause },
        ),
    );
  }

  /** Only terminal executions are deleted: none is QUEUED, so the queue length stays as it is. */
  async delete(id: string, read: StoredVersion): Promise<void> {
    try {
      await retryingConflicts(() =>
        this.db.send(
          new DeleteCommand({
            TableName: this.table,
            Key: { [TABLE_KEY]: id },
            ConditionExpression: '#version = :version AND #state = :state',
            ExpressionAttributeNames: { '#version': 'version', '#state': 'state' },
            ExpressionAttributeValues: { ':version': read.version, ':state': read.state },
          }),
        ),
      );
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) {
        throw new StaleExecution(
          `execution ${id} changed since it was read (version ${read.version}, ${read.state})`,
          {
            cause: error,
          },
        );
      }
      throw error;
    }
  }

  /**
   * Puts an execution's item if its condition holds. A write that moves it into or out of the
   * queue changes the queue length in the same transaction, so the length follows exactly the
   * writes that took effect: one that loses its condition (a lost race, a stale duplicate)
   * changes neither, and is answered with `stale`.
   */
  private async write(
    put: ConditionalPut,
    queueDelta: number,
    stale: (cause: unknown) => Error,
  ): Promise<void> {
    try {
      await retryingConflicts(async () => {
        if (queueDelta === 0) {
          await this.db.send(new PutCommand(put));
          return;
        }
        await this.db.send(
          new TransactWriteCommand({
            TransactItems: [{ Put: put }, { Update: this.queueLengthChange(queueDelta) }],
          }),
        );
      });
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) throw stale(error);
      if (!(error instanceof TransactionCanceledException)) throw error;
      const [execution, length] = error.CancellationReasons ?? [];
      if (execution?.Code === 'ConditionalCheckFailed') throw stale(error);
      if (length?.Code === 'ConditionalCheckFailed') {
        // The length says nothing is queued while this execution is: it was queued around the
        // store (before the length was kept, or by a bulk load). The write goes through and the
        // length stays at zero rather than below it; it is exact again once the queue empties.
        await this.write(put, 0, stale);
        return;
      }
      throw error;
    }
  }

  /** Adds `delta` to the queue length; taking away is conditional on it staying at zero or above. */
  private queueLengthChange(delta: number) {
    return {
      TableName: this.table,
      Key: { [TABLE_KEY]: QUEUE_LENGTH_KEY },
      UpdateExpression: 'ADD #jobs :delta',
      ExpressionAttributeNames: { '#jobs': QUEUE_LENGTH_ATTRIBUTE },
      ...(delta < 0
        ? {
            ConditionExpression: '#jobs >= :taken',
            ExpressionAttributeValues: { ':delta': delta, ':taken': -delta },
          }
        : { ExpressionAttributeValues: { ':delta': delta } }),
    };
  }

  /** One counting query per state on the owner-and-state index, each read until done or `cap`. */
  async countByState(owner: string, cap: number): Promise<StateCounts> {
    const atLeast: ExecutionState[] = [];
    const counted = await Promise.all(
      EXECUTION_STATES.map(async (state) => {
        let count = 0;
        let start: Record<string, unknown> | undefined;
        do {
          const reply = await this.db.send(
            new QueryCommand({
              TableName: this.table,
              IndexName: INDEXES.byOwnerState.name,
              KeyConditionExpression: '#p = :p',
              ExpressionAttributeNames: { '#p': INDEXES.byOwnerState.partitionKey },
              ExpressionAttributeValues: { ':p': `${owner}#${state}` },
              Select: 'COUNT',
              // Never more than the cap: past it, a count says "at least".
              Limit: cap - count,
              ...(start === undefined ? {} : { ExclusiveStartKey: start }),
            }),
          );
          count += reply.Count ?? 0;
          start = reply.LastEvaluatedKey;
        } while (start !== undefined && count < cap);
        if (start !== undefined) atLeast.push(state);
        return [state, count] as const;
      }),
    );
    return { counts: Object.fromEntries(counted) as Record<ExecutionState, number>, atLeast };
  }

  async list(query: ListQuery): Promise<Page<Execution>> {
    const partitions = this.partitionsFor(query);
    const after =
      query.cursor === undefined ? undefined : decodeCursor(query.cursor, Object.keys(partitions));
    const fetched = await Promise.all(
      Object.entries(partitions).map(async ([name, input]) => {
        const start = after?.[name];
        if (start === undefined && after !== undefined)
          return { name, items: [] as ExecutionItem[], more: false, evaluated: undefined };
        const reply = await this.db.send(
          new QueryCommand({
            ...withFilters(input, query),
            Limit: query.limit,
            ScanIndexForward: false,
            ...(start ? { ExclusiveStartKey: startKey(input, start) } : {}),
          }),
        );
        return {
          name,
          items: (reply.Items ?? []) as ExecutionItem[],
          more: reply.LastEvaluatedKey !== undefined,
          // With a filter, the page read may end past the last item returned.
          evaluated: reply.LastEvaluatedKey?.[SORT_KEY] as string | undefined,
        };
      }),
    );
    const merged = fetched
      .flatMap(({ name, items }) => items.map((item) => ({ name, item })))
      .sort((a, b) => (a.item.sortKey < b.item.sortKey ? 1 : a.item.sortKey > b.item.sortKey ? -1 : 0));
    const taken = merged.slice(0, query.limit);
    const next: CursorState = {};
    let more = false;
    for (const { name, items, more: partitionMore, evaluated } of fetched) {
      const mine = taken.filter((t) => t.name === name);
      const allTaken = mine.length === items.length;
      const last = (allTaken ? evaluated : undefined) ?? mine.at(-1)?.item.sortKey ?? after?.[name] ?? null;
      const leftOver = mine.length < items.length || partitionMore;
      if (leftOver) {
        next[name] = last;
        more = true;
      }
    }
    const items = taken.map((t) => t.item.execution);
    return more ? { items, nextCursor: encodeCursor(next) } : { items };
  }

  /**
   * At most four calls whatever the queue length: the first `limit` by priority, the oldest by key
   * then its record, and the queue length item.
   */
  async queueHead(limit: number): Promise<QueueHead> {
    const onIndex = (index: (typeof INDEXES)['queueHead' | 'queueAge']) => ({
      TableName: this.table,
      IndexName: index.name,
      KeyConditionExpression: '#p = :p',
      ExpressionAttributeNames: { '#p': index.partitionKey },
      ExpressionAttributeValues: { ':p': 'QUEUED' },
    });
    const queueLength = async (): Promise<number> => {
      const reply = await this.db.send(
        new GetCommand({
          TableName: this.table,
          Key: { [TABLE_KEY]: QUEUE_LENGTH_KEY },
          ConsistentRead: true,
        }),
      );
      return Number(reply.Item?.[QUEUE_LENGTH_ATTRIBUTE] ?? 0);
    };
    const oldest = async (): Promise<Execution | undefined> => {
      const reply = await this.db.send(new QueryCommand({ ...onIndex(INDEXES.queueAge), Limit: 1 }));
      const key = reply.Items?.[0]?.[TABLE_KEY];
      return key === undefined ? undefined : this.get(String(key));
    };
    const [first, oldestExecution, length] = await Promise.all([
      this.db.send(new QueryCommand({ ...onIndex(INDEXES.queueHead), Limit: limit })),
      oldest(),
      queueLength(),
    ]);
    return {
      // An index is read eventually consistently: an entry may lag its record by a moment.
      first: ((first.Items ?? []) as ExecutionItem[])
        .map((item) => item.execution)
        .filter((execution) => execution.state === 'QUEUED'),
      ...(oldestExecution?.state === 'QUEUED' ? { oldest: oldestExecution } : {}),
      length,
    };
  }

  async queuedAhead(execution: Execution, cap: number): Promise<number> {
    const mine = queueKeys({ ...execution, state: 'QUEUED' })[QUEUE_ORDER];
    let ahead = 0;
    let start: Record<string, unknown> | undefined;
    do {
      const reply = await this.db.send(
        new QueryCommand({
          TableName: this.table,
          IndexName: INDEXES.queueHead.name,
          KeyConditionExpression: '#p = :p AND #o < :mine',
          ExpressionAttributeNames: { '#p': INDEXES.queueHead.partitionKey, '#o': QUEUE_ORDER },
          ExpressionAttributeValues: { ':p': 'QUEUED', ':mine': mine },
          Select: 'COUNT',
          Limit: cap - ahead,
          ...(start === undefined ? {} : { ExclusiveStartKey: start }),
        }),
      );
      ahead += reply.Count ?? 0;
      start = reply.LastEvaluatedKey;
    } while (start !== undefined && ahead < cap);
    return Math.min(ahead, cap);
  }

  /** One query per state (or one for all states), keyed by the name used in cursors. */
  private partitionsFor(query: ListQuery): Record<string, QueryCommandInput> {
    const states = query.states?.length ? [...new Set(query.states)] : undefined;
    const queryOn = (index: { name: string; partitionKey: string }, value: string): QueryCommandInput => ({
      TableName: this.table,
      IndexName: index.name,
      KeyConditionExpression: '#p = :p',
      ExpressionAttributeNames: { '#p': index.partitionKey },
      ExpressionAttributeValues: { ':p': value },
    });
    if (states === undefined) {
      if (query.owner === undefined)
        throw new Error('listing every execution of every caller is not supported');
      return { [ALL]: queryOn(INDEXES.byOwner, query.owner) };
    }
    return Object.fromEntries(
      states.map((state) => [
        state,
        query.owner === undefined
          ? queryOn(INDEXES.byState, state)
          : queryOn(INDEXES.byOwnerState, `${query.owner}#${state}`),
      ]),
    );
  }
}

/**
 * The label, image and name filters, applied by DynamoDB after it reads a page: a filtered page may hold
 * fewer items than the limit, even none, and still have a next cursor.
 */
function withFilters(input: QueryCommandInput, query: ListQuery): QueryCommandInput {
  const names: Record<string, string> = { ...input.ExpressionAttributeNames };
  const values: Record<string, unknown> = { ...input.ExpressionAttributeValues };
  const conditions: string[] = [];
  const labels = Object.entries(query.labels ?? {});
  const labelKeys = query.labelKeys ?? [];
  if (
    labels.length > 0 ||
    labelKeys.length > 0 ||
    query.image !== undefined ||
    query.namePrefix !== undefined
  ) {
    names['#x'] = 'execution';
    names['#spec'] = 'spec';
  }
  labels.forEach(([key, value], i) => {
    names['#labels'] = 'labels';
    names[`#l${i}`] = key;
    values[`:l${i}`] = value;
    conditions.push(`#x.#spec.#labels.#l${i} = :l${i}`);
  });
  labelKeys.forEach((key, i) => {
    names['#labels'] = 'labels';
    names[`#k${i}`] = key;
    conditions.push(`attribute_exists(#x.#spec.#labels.#k${i})`);
  });
  if (query.image !== undefined) {
    names['#image'] = 'image';
    values[':image'] = query.image;
    conditions.push('#x.#spec.#image = :image');
  }
  if (query.namePrefix !== undefined) {
    names['#name'] = 'name';
    values[':namePrefix'] = query.namePrefix;
    conditions.push('begins_with(#x.#spec.#name, :namePrefix)');
  }
  if (conditions.length === 0) return input;
  return {
    ...input,
    FilterExpression: conditions.join(' AND '),
    ExpressionAttributeNames: names,
    ExpressionAttributeValues: values,
  };
}

function startKey(input: QueryCommandInput, sortKey: string): Record<string, string> {
  const partitionAttribute = input.ExpressionAttributeNames?.['#p'] ?? '';
  const id = sortKey.slice(sortKey.lastIndexOf('#') + 1);
  return {
    [TABLE_KEY]: id,
    [partitionAttribute]: String(input.ExpressionAttributeValues?.[':p']),
    [SORT_KEY]: sortKey,
  };
}

function encodeCursor(state: CursorState): string {
  return Buffer.from(JSON.stringify({ v: 1, s: state })).toString('base64url');
}

function decodeCursor(cursor: string, partitions: readonly string[]): CursorState {
  const invalid = () =>
    new ValidationError('invalid cursor: pass back the nextCursor of an earlier page, with the same states', [
      { field: 'cursor', message: 'not a cursor for this query' },
    ]);
  let parsed: { v?: unknown; s?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as typeof parsed;
  } catch {
    throw invalid();
  }
  if (parsed.v !== 1 || typeof parsed.s !== 'object' || parsed.s === null) throw invalid();
  const state = parsed.s as Record<string, unknown>;
  for (const [name, value] of Object.entries(state)) {
    const known = partitions.includes(name) && (name === ALL || isExecutionState(name));
    const wellFormed =
      value === null || (typeof value === 'string' && /^\d{4}-\d\d-\d\dT[^#]+#ex_[0-9a-z]{26}$/.test(value));
    if (!known || !wellFormed) throw invalid();
  }
  if (Object.keys(state).length === 0) throw invalid();
  return state as CursorState;
}

export class DynamoIdempotencyStore implements IdempotencyStore {
  private readonly db: DynamoDBDocumentClient;

  constructor(
    private readonly tableName: string,
    client?: DynamoDBClient,
  ) {
    this.db = documentClient(client);
  }

  private keyOf(key: string) {
    return { [TABLE_KEY]: `idempotency#${key}` };
  }

  private itemOf(key: string, record: IdempotencyRecord) {
    return { ...this.keyOf(key), record, [TTL_ATTRIBUTE]: Math.floor(Date.parse(record.expiresAt) / 1000) };
  }

  async claim(key: string, record: IdempotencyRecord): Promise<IdempotencyRecord | undefined> {
    try {
      await this.db.send(
        new PutCommand({
          TableName: this.tableName,
          Item: this.itemOf(key, record),
          // Taken unless the earlier claim has expired (TTL deletion is lazy).
          ConditionExpression: 'attribute_not_exists(#pk) OR #ttl < :now',
          ExpressionAttributeNames: { '#pk': TABLE_KEY, '#ttl': TTL_ATTRIBUTE },
          ExpressionAttributeValues: { ':now': Math.floor(Date.now() / 1000) },
        }),
      );
      return undefined;
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      const existing = await this.db.send(
        new GetCommand({ TableName: this.tableName, Key: this.keyOf(key), ConsistentRead: true }),
      );
      return (existing.Item as { record?: IdempotencyRecord } | undefined)?.record;
    }
  }

  async complete(key: string, record: IdempotencyRecord): Promise<void> {
    await this.db.send(
      new PutCommand({
        TableName: this.tableName,
        Item: this.itemOf(key, record),
      }),
    );
  }

  async release(key: string): Promise<void> {
    await this.db.send(new DeleteCommand({ TableName: this.tableName, Key: this.keyOf(key) }));
  }
}
