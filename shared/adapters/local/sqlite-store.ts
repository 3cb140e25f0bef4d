// ExecutionStore and IdempotencyStore in the local database. Nothing is cached in memory:
// every write is one transaction, conditional on the version read, so a write that fails
// leaves nothing behind (the queue length, kept by the database's triggers, included);
// waiters are woken in-process once a write has committed.
import { createHmac } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { ChangeFeed } from '../../core.ts';
import type { Execution } from '../../domain/execution.ts';
import {
  canTransition,
  EXECUTION_STATES,
  type ExecutionState,
  TERMINAL_STATES,
} from '../../domain/states.ts';
import { InvalidTransition, StaleExecution, ValidationError } from '../../errors.ts';
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
import {
  digestOf,
  type ExecutionRow,
  executionRowValues,
  type LocalDatabase,
  QUEUE_PRIORITY,
  QUEUED_AT,
} from './database.ts';

interface CursorPosition {
  readonly createdAt: string;
  readonly id: string;
}

/** Parsed records kept by the digest of their stored bytes, at most this many. */
const PARSED_CACHE_LIMIT = 10_000;

export class SqliteExecutionStore implements ExecutionStore, ChangeFeed {
  private readonly changes = new EventEmitter();
  /**
   * The dispatcher reads every active record and the head of the queue for each message it
   * handles; parsing them each time would cost more than the reads. A digest names the exact stored bytes, so
   * a cached parse is never stale; writes never go through it.
   */
  private readonly parsed = new Map<string, Execution>();
  private readonly statements;

  constructor(
    private readonly database: LocalDatabase,
    private readonly cursorKey: Buffer,
  ) {
    this.changes.setMaxListeners(0);
    const { db } = database;
    this.statements = {
      get: db.prepare('SELECT id, version, state, body, digest FROM executions WHERE id = ?'),
      remove: db.prepare('DELETE FROM executions WHERE id = ? AND version = ? AND state = ?'),
      endedBefore: db.prepare(
        `SELECT id, body, digest FROM executions
         WHERE state IN (${TERMINAL_STATES.map((s) => `'${s}'`).join(', ')})
           AND coalesce(json_extract(body, '$.endedAt'), created_at) < ?
           AND created_at < ?
         ORDER BY created_at LIMIT ?`,
      ),
      insert: db.prepare(
        'INSERT INTO executions (id, owner, state, created_at, version, body, digest) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      update: db.prepare(
        'UPDATE executions SET state = ?, version = ?, body = ?, digest = ? WHERE id = ? AND version = ?',
      ),
      queueFirst: db.prepare(
        // Named, since the planner would take the state index and sort the whole queue.
        `SELECT id, body, digest FROM executions INDEXED BY executions_queue_priority
         WHERE state = 'QUEUED' ORDER BY ${QUEUE_PRIORITY} DESC, ${QUEUED_AT}, id LIMIT ?`,
      ),
      queueOldest: db.prepare(
        `SELECT id, body, digest FROM executions INDEXED BY executions_queue_age
         WHERE state = 'QUEUED' ORDER BY ${QUEUED_AT}, id LIMIT 1`,
      ),
      queueAhead: db.prepare(
        `SELECT count(*) AS ahead FROM (
           SELECT 1 FROM executions INDEXED BY executions_queue_priority
           WHERE state = 'QUEUED'
             AND (${QUEUE_PRIORITY} > @priority
               OR (${QUEUE_PRIORITY} = @priority
                 AND (${QUEUED_AT} < @queuedAt OR (${QUEUED_AT} = @queuedAt AND id < @id))))
           LIMIT @cap)`,
      ),
      // One row, kept by the database's triggers (see database.ts).
      queueLength: db.prepare('SELECT jobs AS length FROM queue_length WHERE id = 1'),
    };
  }

  async create(execution: Execution): Promise<void> {
    this.database.write(() => this.insert(execution));
    this.announce(execution.id);
  }

  /** The write of `create`, inside a transaction the caller holds; `announce` once it commits. */
  insert(execution: Execution): void {
    if (this.statements.get.get(execution.id) !== undefined) {
      throw new StaleExecution(`execution ${execution.id} already exists`);
    }
    this.statements.insert.run(...executionRowValues(execution));
  }

  /** Wakes the waiters on an execution after a write has committed. */
  announce(id: string): void {
    this.changes.emit(id);
  }

  async get(id: string): Promise<Execution | undefined> {
    const row = this.database.read(() => this.statements.get.get(id) as ExecutionRow | undefined);
    return row === undefined ? undefined : this.decode(row);
  }

  async update(next: Execution, read: StoredVersion): Promise<void> {
    const body = JSON.stringify(next);
    this.database.write(() => {
      const current = this.statements.get.get(next.id) as ExecutionRow | undefined;
      if (current === undefined || current.version !== read.version || current.state !== read.state) {
        throw new StaleExecution(
          `execution ${next.id} changed since it was read (version ${read.version}, ${read.state})`,
        );
      }
      const from = current.state as Execution['state'];
      if (from !== next.state && !canTransition(from, next.state)) {
        throw new InvalidTransition(`execution ${next.id} cannot move from ${from} to ${next.state}`);
      }
      this.statements.update.run(next.state, next.version, body, digestOf(body), next.id, read.version);
    });
    this.changes.emit(next.id);
  }

  async delete(id: string, read: StoredVersion): Promise<void> {
    this.database.write(() => {
      const removed = this.statements.remove.run(id, read.version, read.state);
      if (removed.changes === 0) {
        throw new StaleExecution(
          `execution ${id} changed since it was read (version ${read.version}, ${read.state})`,
        );
      }
    });
    this.changes.emit(id);
  }

  /**
   * Terminal executions whose run ended (or that were created, if they never ran) before
   * `before`, oldest first, for the retention sweep.
   */
  endedBefore(before: Date, limit: number): Execution[] {
    const rows = this.database.read(
      () =>
        this.statements.endedBefore.all(before.toISOString(), before.toISOString(), limit) as ExecutionRow[],
    );
    return rows.map((row) => this.decode(row));
  }

  /** Newest first by (createdAt, id), so pages never overlap. */
  async countByState(owner: string): Promise<StateCounts> {
    const rows = this.database.read(
      () =>
        this.database.db
          .prepare('SELECT state, COUNT(*) AS n FROM executions WHERE owner = ? GROUP BY state')
          .all(owner) as { state: ExecutionState; n: number }[],
    );
    const counts = Object.fromEntries(EXECUTION_STATES.map((state) => [state, 0])) as Record<
      ExecutionState,
      number
    >;
    for (const row of rows) if (row.state in counts) counts[row.state] = row.n;
    return { counts, atLeast: [] };
  }

  async list(query: ListQuery): Promise<Page<Execution>> {
    const after = query.cursor === undefined ? undefined : this.decodeCursor(query.cursor);
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (query.owner !== undefined) {
      where.push('owner = ?');
      params.push(query.owner);
    }
    if (query.states?.length) {
      where.push(`state IN (${query.states.map(() => '?').join(', ')})`);
      params.push(...query.states);
    }
    // Label keys are letters, digits and . _ / - (the job spec says so): safe inside a quoted path.
    for (const [key, value] of Object.entries(query.labels ?? {})) {
      where.push(`json_extract(body, '$.spec.labels."${key.replaceAll('"', '')}"') = ?`);
      params.push(value);
    }
    for (const key of query.labelKeys ?? []) {
      where.push(`json_type(body, ?) IS NOT NULL`);
      params.push(`$.spec.labels."${key.replaceAll('"', '')}"`);
    }
    if (query.image !== undefined) {
      where.push(`json_extract(body, '$.spec.image') = ?`);
      params.push(query.image);
    }
    if (query.namePrefix !== undefined) {
      // substr, not LIKE: the prefix is matched as written, "%" and "_" included.
      where.push(`substr(json_extract(body, '$.spec.name'), 1, length(?)) = ?`);
      params.push(query.namePrefix, query.namePrefix);
    }
    if (after !== undefined) {
      where.push('(created_at < ? OR (created_at = ? AND id < ?))');
      params.push(after.createdAt, after.createdAt, after.id);
    }
    const sql =
      'SELECT id, body, digest FROM executions' +
      (where.length > 0 ? ` WHERE ${where.join(' AND ')}` : '') +
      ' ORDER BY created_at DESC, id DESC LIMIT ?';
    const rows = this.database.read(
      () => this.database.db.prepare(sql).all(...params, query.limit + 1) as ExecutionRow[],
    );
    const items = rows.slice(0, query.limit).map((row) => this.decode(row));
    const last = items.at(-1);
    return rows.length > query.limit && last !== undefined
      ? { items, nextCursor: this.encodeCursor({ createdAt: last.createdAt, id: last.id }) }
      : { items };
  }

  async queueHead(limit: number): Promise<QueueHead> {
    const { first, oldest, length } = this.database.read(() => ({
      first: this.statements.queueFirst.all(limit) as ExecutionRow[],
      oldest: this.statements.queueOldest.get() as ExecutionRow | undefined,
      length: (this.statements.queueLength.get() as { length: number }).length,
    }));
    return {
      first: first.map((row) => this.decode(row)),
      ...(oldest === undefined ? {} : { oldest: this.decode(oldest) }),
      length,
    };
  }

  async queuedAhead(execution: Execution, cap: number): Promise<number> {
    const row = this.database.read(
      () =>
        this.statements.queueAhead.get({
          priority: execution.spec.priority ?? 0,
          queuedAt: execution.queuedAt ?? execution.createdAt,
          id: execution.id,
          cap,
        }) as { ahead: number },
    );
    return row.ahead;
  }

  private decode(row: Pick<ExecutionRow, 'id' | 'body' | 'digest'>): Execution {
    const cached = this.parsed.get(row.digest);
    if (cached !== undefined && cached.id === row.id) return cached;
    const execution = this.database.decode<Execution>(row.id, row.body, row.digest);
    if (this.parsed.size >= PARSED_CACHE_LIMIT) this.parsed.clear();
    this.parsed.set(row.digest, execution);
    return execution;
  }

  waitForChange(id: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.changes.off(id, done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.changes.once(id, done);
    });
  }

  private sign(payload: string): string {
    return createHmac('sha256', this.cursorKey).update(payload).digest('base64url').slice(0, 22);
  }

  private encodeCursor(position: CursorPosition): string {
    const payload = Buffer.from(JSON.stringify([position.createdAt, position.id])).toString('base64url');
    return `${payload}.${this.sign(payload)}`;
  }

  private decodeCursor(cursor: string): CursorPosition {
    const [payload = '', signature] = cursor.split('.');
    if (signature === undefined || this.sign(payload) !== signature) {
      throw new ValidationError('invalid cursor: pass back the nextCursor of an earlier page unchanged', [
        { field: 'cursor', message: 'not a cursor this server issued' },
      ]);
    }
    const [createdAt, id] = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as [
      string,
      string,
    ];
    return { createdAt, id };
  }
}

/** Expired keys each claim deletes, at most: more than one claim ever adds. */
const PURGE_BATCH = 16;

export class SqliteIdempotencyStore implements IdempotencyStore {
  private readonly statements;

  constructor(
    private readonly database: LocalDatabase,
    private readonly now: () => number = Date.now,
  ) {
    const { db } = database;
    this.statements = {
      get: db.prepare('SELECT body, expires_at FROM idempotency WHERE key = ?'),
      put: db.prepare(
        'INSERT OR REPLACE INTO idempotency (key, state, expires_at, body) VALUES (?, ?, ?, ?)',
      ),
      delete: db.prepare('DELETE FROM idempotency WHERE key = ?'),
      purge: db.prepare(
        'DELETE FROM idempotency WHERE key IN (SELECT key FROM idempotency WHERE expires_at <= ? LIMIT ?)',
      ),
    };
    // This server holds the database alone, so a claim still in progress was made by a
    // server that is gone: its request was never answered and may be retried at once.
    database.write(() => {
      db.prepare("DELETE FROM idempotency WHERE state = 'IN_PROGRESS' OR expires_at <= ?").run(this.now());
    });
  }

  async claim(key: string, record: IdempotencyRecord): Promise<IdempotencyRecord | undefined> {
    return this.database.write(() => {
      // A server runs for weeks: each claim clears a few expired keys, so the table holds
      // about a day of requests, and no claim pays for a long backlog at once.
      this.statements.purge.run(this.now(), PURGE_BATCH);
      const existing = this.statements.get.get(key) as { body: string; expires_at: number } | undefined;
      if (existing !== undefined && existing.expires_at > this.now()) {
        return this.database.parse<IdempotencyRecord>(key, existing.body);
      }
      this.put(key, record);
      return undefined;
    });
  }

  async complete(key: string, record: IdempotencyRecord): Promise<void> {
    this.database.write(() => this.put(key, record));
  }

  async release(key: string): Promise<void> {
    this.database.write(() => {
      this.statements.delete.run(key);
    });
  }

  private put(key: string, record: IdempotencyRecord): void {
    this.statements.put.run(key, record.state, Date.parse(record.expiresAt), JSON.stringify(record));
  }
}
