// An SQS event source mapping, as Lambda runs one: pollers receive batches from the queue
// with the function's own credentials, invoke the function with an SQS event, and delete what
// it handled. With ReportBatchItemFailures only the reported messages stay; a failed
// invocation leaves the whole batch to reappear after the queue's visibility timeout, and
// SQS's redrive policy moves a message to the dead-letter queue after maxReceiveCount
// receives. At most `maxConcurrency` invocations run at once.
import {
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { Logger } from '../../logger.ts';
import type { InvokeOutcome } from './lambda-runtime.ts';

export interface SqsPollerOptions {
  readonly queueUrl: string;
  readonly queueArn: string;
  readonly region: string;
  /** Signed with the function's role, as Lambda's poller is. */
  readonly sqs: SQSClient;
  readonly batchSize: number;
  readonly maxConcurrency: number;
  readonly reportBatchItemFailures: boolean;
  /** Long-poll wait of each receive; Lambda uses 20 s, tests want less. */
  readonly waitSeconds: number;
  readonly invoke: (event: unknown) => Promise<InvokeOutcome>;
  readonly log: Logger;
}

/** Messages a queue holds: visible, in flight (received, not yet deleted) and delayed. */
export async function queueDepth(sqs: SQSClient, queueUrl: string): Promise<number> {
  const reply = await sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: [
        'ApproximateNumberOfMessages',
        'ApproximateNumberOfMessagesNotVisible',
        'ApproximateNumberOfMessagesDelayed',
      ],
    }),
  );
  return Object.values(reply.Attributes ?? {}).reduce((sum, n) => sum + Number(n), 0);
}

export class SqsPoller {
  private running = false;
  private readonly loops: Promise<void>[] = [];
  /**
   * Extra deliveries of every batch, made at once: SQS delivers at least once, and a message
   * whose visibility runs out while its first receiver still works is received again.
   */
  duplicates = 0;
  /** Invocations made, and how many of them failed as a whole. */
  invocations = 0;
  failedInvocations = 0;

  constructor(private readonly options: SqsPollerOptions) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    for (let i = 0; i < this.options.maxConcurrency; i += 1) this.loops.push(this.loop());
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops.splice(0));
  }

  private async loop(): Promise<void> {
    const o = this.options;
    while (this.running) {
      let messages: Message[];
      try {
        const reply = await o.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: o.queueUrl,
            MaxNumberOfMessages: Math.min(o.batchSize, 10),
            WaitTimeSeconds: o.waitSeconds,
            MessageSystemAttributeNames: ['All'],
            MessageAttributeNames: ['All'],
          }),
        );
        messages = reply.Messages ?? [];
      } catch (error) {
        if (!this.running) return;
        o.log.warn('the event source could not receive from its queue', { queue: o.queueArn, error });
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      if (messages.length === 0) {
        if (o.waitSeconds === 0) await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      await this.deliver(messages);
    }
  }

  private async deliver(messages: Message[]): Promise<void> {
    const copies = Array.from({ length: this.duplicates }, () => this.deliverOnce(messages));
    await Promise.all([this.deliverOnce(messages), ...copies]);
  }

  private async deliverOnce(messages: Message[]): Promise<void> {
    const o = this.options;
    const event = {
      Records: messages.map((m) => ({
        messageId: m.MessageId ?? '',
        receiptHandle: m.ReceiptHandle ?? '',
        body: m.Body ?? '',
        attributes: m.Attributes ?? {},
        messageAttributes: Object.fromEntries(
          Object.entries(m.MessageAttributes ?? {}).map(([name, value]) => [
            name,
            {
              stringValue: value.StringValue,
              dataType: value.DataType,
              stringListValues: [],
              binaryListValues: [],
            },
          ]),
        ),
        md5OfBody: m.MD5OfBody ?? '',
        eventSource: 'aws:sqs',
        eventSourceARN: o.queueArn,
        awsRegion: o.region,
      })),
    };
    this.invocations += 1;
    const outcome = await o.invoke(event);
    if (!outcome.ok) {
      this.failedInvocations += 1;
      o.log.warn('the function failed a batch; it reappears after the visibility timeout', {
        queue: o.queueArn,
        error: outcome.error,
      });
      return;
    }
    const failed = new Set(
      o.reportBatchItemFailures
        ? (
            (outcome.value as { batchItemFailures?: { itemIdentifier: string }[] } | null)
              ?.batchItemFailures ?? []
          ).map((f) => f.itemIdentifier)
        : [],
    );
    const handled = messages.filter((m) => !failed.has(m.MessageId ?? ''));
    if (handled.length === 0) return;
    try {
      await o.sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: o.queueUrl,
          Entries: handled.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle ?? '' })),
        }),
      );
    } catch (error) {
      o.log.warn('the event source could not delete handled messages', { queue: o.queueArn, error });
    }
  }
}
