// JobIntake in the local database: the record and its first message are one transaction, so
// a submission that fails leaves nothing behind that could run later.
import type { Execution } from '../../domain/execution.ts';
import type { DispatchMessage, JobIntake } from '../../ports.ts';
import type { LocalDatabase } from './database.ts';
import type { SqliteJobQueue } from './sqlite-queue.ts';
import type { SqliteExecutionStore } from './sqlite-store.ts';

export class SqliteJobIntake implements JobIntake {
  constructor(
    private readonly database: LocalDatabase,
    private readonly store: SqliteExecutionStore,
    private readonly queue: SqliteJobQueue,
  ) {}

  async enqueueNew(execution: Execution, message: DispatchMessage): Promise<void> {
    this.database.write(() => {
      this.store.insert(execution);
      this.queue.insert(message);
    });
    this.store.announce(execution.id);
    this.queue.wake();
  }
}
