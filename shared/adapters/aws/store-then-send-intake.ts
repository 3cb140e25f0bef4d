// JobIntake on DynamoDB and SQS, which share no transaction: the record is written first,
// then its message sent, and only then is the job accepted. If the send fails the record is
// QUEUED without a message; the submission ends it FAILED before answering, and should even
// that write fail, the sweeper's re-send of a QUEUED record is the recovery.
import type { Execution } from '../../domain/execution.ts';
import type { DispatchMessage, ExecutionStore, JobIntake, JobQueue } from '../../ports.ts';

export class StoreThenSendIntake implements JobIntake {
  constructor(
    private readonly store: ExecutionStore,
    private readonly queue: JobQueue,
  ) {}

  async enqueueNew(execution: Execution, message: DispatchMessage): Promise<void> {
    await this.store.create(execution);
    await this.queue.send(message);
  }
}
