// JobQueue on SQS. Delivery is at least once; the dispatcher is built for duplicates.
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { DispatchMessage, JobQueue } from '../../ports.ts';

/** SQS delays a message by at most 15 minutes. */
const MAX_DELAY_SECONDS = 900;

export class SqsJobQueue implements JobQueue {
  private readonly sqs: SQSClient;

  constructor(
    private readonly queueUrl: string,
    client?: SQSClient,
  ) {
    this.sqs = client ?? new SQSClient({});
  }

  async send(message: DispatchMessage, options: { delaySeconds?: number } = {}): Promise<void> {
    const delay = Math.max(0, Math.min(MAX_DELAY_SECONDS, Math.round(options.delaySeconds ?? 0)));
    await this.sqs.send(
      new SendMessageCommand({
        QueueUrl: this.queueUrl,
        MessageBody: JSON.stringify(message),
        ...(delay > 0 ? { DelaySeconds: delay } : {}),
      }),
    );
  }
}
