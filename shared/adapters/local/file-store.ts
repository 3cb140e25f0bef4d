// ExecutionStore and IdempotencyStore on local disk. Records live in memory for reads and
// in a journal for restarts; writes are conditional on the version, like DynamoDB's.
import { createHmac } from 'node:crypto';
import { EventEmitter } from 'node:events';
import path from 'node:path';
import type { ChangeFeed } from '../../core.ts';
import type { Execution } from '../../domain/execution.ts';
import { canTransition } from '../../domain/states.ts';
import { InvalidTransition, StaleExecution, ValidationError } from '../../errors.ts';
import type { ExecutionStore, IdempotencyRecord, IdempotencyStore, ListQuery, Page } from '../../ports.ts';
import { loadSecret } from './data-dir.ts';
import { JournalMap } from './journal.ts';

interface CursorPosition {
  readonly createdAt: string;
  readonly id: string;
}

/** Newest first; ties broken by id so pages never overlap. */
const newestFirst = (a: CursorPosition, b: CursorPosition): number =>
  a.createdAt === b.createdAt ? b.id.localeCompare(a.id) : a.createdAt < b.createdAt ? 1 : -1;

export class FileExecutionStore implements ExecutionStore, ChangeFeed {
  private readonly changes = new EventEmitter();

  private constructor(
    private readonly records: JournalMap<Execution>,
    private readonly cursorKey: Buffer,
  ) {
    this.changes.setMaxListeners(0);
  }

  static async open(dataDir: string): Promise<FileExecutionStore> {
    const records = await JournalMap.open<Execution>(path.join(dataDir, 'executions.jsonl'));
    return new FileExecutionStore(records, await loadSecret(path.join(dataDir, 'cursor.key')));
  }

  async create(execution: Execution): Promise<void> {
    if (this.records.get(execution.id) !== undefined) {
      throw new StaleExecution(`execution ${execution.id} already exists`);
    }
    await this.records.set(execution.id, execution);
    this.changes.emit(execution.id);
  }

  async get(id: string): Promise<Execution | undefined> {
    return this.records.get(id);
  }

  async update(next: Execution, expectedVersion: number): Promise<void> {
    const current = this.records.get(next.id);
    if (current === undefined || current.version !== expectedVersion) {
      throw new StaleExecution(`execution ${next.id} changed since it was read (version ${expectedVersion})`);
    }
    if (current.state !== next.state && !canTransition(current.state, next.state)) {
      throw new InvalidTransition(`execution ${next.id} cannot move from ${current.state} to ${next.state}`);
    }
    await this.records.set(next.id, next);
    this.changes.emit(next.id);
  }

  async list(query: ListQuery): Promise<Page<Execution>> {
    const after = query.cursor === undefined ? undefined : this.decodeCursor(query.cursor);
    const states = query.states?.length ? new Set(query.states) : undefined;
    const matching = [...this.records.values()]
      .filter(
        (e) => (query.owner === undefined || e.owner === query.owner) && (!states || states.has(e.state)),
      )
      .filter((e) => after === undefined || newestFirst(e, after) > 0)
      .sort(newestFirst);
    const items = matching.slice(0, query.limit);
    const last = items.at(-1);
    return matching.length > query.limit && last !== undefined
      ? { items, nextCursor: this.encodeCursor({ createdAt: last.createdAt, id: last.id }) }
      : { items };
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

  close(): Promise<void> {
    return this.records.close();
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

export class FileIdempotencyStore implements IdempotencyStore {
  private constructor(private readonly records: JournalMap<IdempotencyRecord>) {}

  static async open(dataDir: string): Promise<FileIdempotencyStore> {
    return new FileIdempotencyStore(await JournalMap.open(path.join(dataDir, 'idempotency.jsonl')));
  }

  async claim(key: string, record: IdempotencyRecord): Promise<IdempotencyRecord | undefined> {
    const existing = this.records.get(key);
    if (existing !== undefined && Date.parse(existing.expiresAt) > Date.now()) return existing;
    await this.records.set(key, record);
    return undefined;
  }

  async complete(key: string, record: IdempotencyRecord): Promise<void> {
    await this.records.set(key, record);
  }

  async release(key: string): Promise<void> {
    await this.records.delete(key);
  }

  close(): Promise<void> {
    return this.records.close();
  }
}
