// The dispatch queue in the local database, with SQS's semantics: delivery delay, a
// visibility timeout after each receive, redelivery when a message is not deleted in time,
// and a dead-letter table after too many receives. Messages survive a crash with the
// records they belong to; a waiting receiver is woken in-process when one is sent.
import { randomUUID } from 'node:crypto';
import type { DispatchMessage, JobQueue } from '../../ports.ts';
import type { LocalDatabase } from './database.ts';

export interface ReceivedMessage {
  readonly messageId: string;
  readonly receiptHandle: string;
  readonly body: string;
  readonly receiveCount: number;
  readonly sentAt: number;
}

export interface JobQueueOptions {
  readonly visibilitySeconds: number;
  readonly maxReceives: number;
  readonly now?: () => number;
}

interface MessageRow {
  readonly seq: number;
  readonly message_id: string;
  readonly body: string;
  readonly sent_at: number;
  readonly receive_count: number;
}

export class SqliteJobQueue implements JobQueue {
  private readonly waiters = new Set<() => void>();
  private readonly now: () => number;
  private readonly statements;

  constructor(
    private readonly database: LocalDatabase,
    private readonly options: JobQueueOptions,
  ) {
    this.now = options.now ?? Date.now;
    const { db } = database;
    this.statements = {
      insert: db.prepare(
        'INSERT INTO queue (message_id, execution_id, body, sent_at, visible_at) VALUES (?, ?, ?, ?, ?)',
      ),
      nextVisible: db.prepare(
        'SELECT seq, message_id, body, sent_at, receive_count FROM queue WHERE visible_at <= ? ORDER BY sent_at, seq LIMIT 1',
      ),
      hide: db.prepare(
        'UPDATE queue SET receive_count = ?, receipt_handle = ?, visible_at = ? WHERE seq = ?',
      ),
      remove: db.prepare('DELETE FROM queue WHERE seq = ?'),
      deadLetter: db.prepare(
        'INSERT OR REPLACE INTO dead_letters (message_id, body, sent_at, receive_count, dead_at) VALUES (?, ?, ?, ?, ?)',
      ),
      deleteByReceipt: db.prepare('DELETE FROM queue WHERE receipt_handle = ?'),
      changeVisibility: db.prepare('UPDATE queue SET visible_at = ? WHERE receipt_handle = ?'),
      releaseDelayed: db.prepare(
        `UPDATE queue SET visible_at = ? WHERE seq IN (
           SELECT seq FROM queue WHERE receipt_handle IS NULL AND visible_at > ? ORDER BY visible_at LIMIT ?)`,
      ),
      nextVisibleAt: db.prepare('SELECT min(visible_at) AS at FROM queue'),
      depth: db.prepare('SELECT count(*) AS n FROM queue'),
      waitingFor: db.prepare('SELECT 1 FROM queue WHERE execution_id = ? LIMIT 1'),
      deadLetters: db.prepare(
        'SELECT message_id, body, sent_at, receive_count FROM dead_letters ORDER BY dead_at, rowid',
      ),
    };
    // Visibility timeouts do not outlive the process that received the messages: what the
    // last server had in hand is delivered again now.
    database.write(() => {
      db.prepare(
        'UPDATE queue SET receipt_handle = NULL, visible_at = min(visible_at, ?) WHERE receipt_handle IS NOT NULL',
      ).run(this.now());
    });
  }

  async send(message: DispatchMessage, options: { delaySeconds?: number } = {}): Promise<void> {
    this.database.write(() => this.insert(message, options.delaySeconds ?? 0));
    this.wake();
  }

  /** The write of `send`, inside a transaction the caller holds; `wake` once it commits. */
  insert(message: DispatchMessage, delaySeconds = 0): void {
    const at = this.now();
    this.statements.insert.run(
      randomUUID(),
      message.executionId,
      JSON.stringify(message),
      at,
      at + delaySeconds * 1000,
    );
  }

  /** Up to `max` visible messages, each hidden for the visibility timeout; waits up to `waitMs` for one. */
  async receive(max: number, waitMs: number): Promise<ReceivedMessage[]> {
    // Every call on this queue is synchronous: without this turn of the event loop, a
    // receiver that always finds work (jobs deferred for capacity come back every second)
    // would starve HTTP requests, timers and the events of finished jobs.
    await new Promise((resolve) => setImmediate(resolve));
    const deadline = this.now() + waitMs;
    for (;;) {
      const batch = this.take(max);
      if (batch.length > 0) return batch;
      const left = deadline - this.now();
      if (left <= 0) return [];
      await this.sleepUntilSomething(Math.min(left, this.msUntilNextVisible()));
    }
  }

  async delete(receiptHandle: string): Promise<void> {
    this.database.write(() => this.statements.deleteByReceipt.run(receiptHandle));
  }

  async changeVisibility(receiptHandle: string, seconds: number): Promise<void> {
    this.database.write(() =>
      this.statements.changeVisibility.run(this.now() + seconds * 1000, receiptHandle),
    );
    this.wake();
  }

  /**
   * Makes up to `max` messages still waiting out their delivery delay visible now, those due
   * soonest first; received (in-flight) messages stay hidden. Local only: the runtime calls
   * it when capacity frees, so a deferred job need not wait out its whole delay.
   */
  releaseDelayed(max: number): void {
    const now = this.now();
    const changed = this.database.write(() => this.statements.releaseDelayed.run(now, now, max).changes);
    if (changed > 0) this.wake();
  }

  /** True if a message for the execution is waiting or in flight. */
  holdsMessageFor(executionId: string): boolean {
    return this.database.read(() => this.statements.waitingFor.get(executionId) !== undefined);
  }

  /** Messages not yet deleted, visible or not (ApproximateNumberOfMessages + NotVisible). */
  get depth(): number {
    return this.database.read(() => (this.statements.depth.get() as { n: number }).n);
  }

  /** Messages received more than `maxReceives` times, oldest first. */
  get deadLetters(): ReceivedMessage[] {
    const rows = this.database.read(() => this.statements.deadLetters.all() as MessageRow[]);
    return rows.map((row) => ({
      messageId: row.message_id,
      receiptHandle: '',
      body: row.body,
      receiveCount: row.receive_count,
      sentAt: row.sent_at,
    }));
  }

  private take(max: number): ReceivedMessage[] {
    const now = this.now();
    return this.database.write(() => {
      const batch: ReceivedMessage[] = [];
      while (batch.length < max) {
        const row = this.statements.nextVisible.get(now) as MessageRow | undefined;
        if (row === undefined) break;
        const receiveCount = row.receive_count + 1;
        if (receiveCount > this.options.maxReceives) {
          this.statements.remove.run(row.seq);
          this.statements.deadLetter.run(row.message_id, row.body, row.sent_at, receiveCount, now);
          continue;
        }
        const receiptHandle = randomUUID();
        this.statements.hide.run(
          receiveCount,
          receiptHandle,
          now + this.options.visibilitySeconds * 1000,
          row.seq,
        );
        batch.push({
          messageId: row.message_id,
          receiptHandle,
          body: row.body,
          receiveCount,
          sentAt: row.sent_at,
        });
      }
      return batch;
    });
  }

  private msUntilNextVisible(): number {
    const { at } = this.database.read(() => this.statements.nextVisibleAt.get() as { at: number | null });
    return at === null ? Number.POSITIVE_INFINITY : Math.max(1, at - this.now());
  }

  private sleepUntilSomething(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  /** Wakes waiting receivers after a send has committed. */
  wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}
