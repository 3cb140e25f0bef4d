// The job queue on SQS, against the emulator: a message comes back as it was sent, a delay
// holds it back (and one past SQS's 15-minute limit is cut to it rather than refused), and a
// message that keeps failing moves to the dead-letter queue after the last allowed receive,
// as the deployment's redrive policy says.
import { randomUUID } from 'node:crypto';
import {
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { beforeAll, describe, expect, it } from 'vitest';
import { SqsJobQueue } from '../../shared/adapters/aws/sqs-queue.ts';
import { clientConfig } from '../support/aws.ts';

const MAX_RECEIVES = 3;

describe('SQS job queue', () => {
  const sqs = new SQSClient(clientConfig('sqs'));
  let queueUrl: string;
  let deadLetterQueueUrl: string;
  let queue: SqsJobQueue;

  async function createQueue(name: string, attributes: Record<string, string> = {}): Promise<string> {
    const created = await sqs.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }));
    return created.QueueUrl ?? '';
  }

  async function receive(url: string, waitSeconds = 0): Promise<Message[]> {
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: waitSeconds,
        MessageSystemAttributeNames: ['ApproximateReceiveCount'],
      }),
    );
    return Messages;
  }

  async function counts(url: string): Promise<{ visible: number; delayed: number; inFlight: number }> {
    const { Attributes = {} } = await sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: url,
        AttributeNames: [
          'ApproximateNumberOfMessages',
          'ApproximateNumberOfMessagesDelayed',
          'ApproximateNumberOfMessagesNotVisible',
        ],
      }),
    );
    return {
      visible: Number(Attributes.ApproximateNumberOfMessages),
      delayed: Number(Attributes.ApproximateNumberOfMessagesDelayed),
      inFlight: Number(Attributes.ApproximateNumberOfMessagesNotVisible),
    };
  }

  beforeAll(async () => {
    const id = randomUUID().slice(0, 8);
    deadLetterQueueUrl = await createQueue(`ferry-${id}-dlq`);
    const { Attributes = {} } = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: deadLetterQueueUrl, AttributeNames: ['QueueArn'] }),
    );
    queueUrl = await createQueue(`ferry-${id}`, {
      VisibilityTimeout: '60',
      RedrivePolicy: JSON.stringify({
        deadLetterTargetArn: Attributes.QueueArn,
        maxReceiveCount: MAX_RECEIVES,
      }),
    });
    queue = new SqsJobQueue(queueUrl, sqs);
  });

  it('delivers a dispatch message as it was sent', async () => {
    const message = { executionId: `exec-${randomUUID()}`, token: randomUUID() };

    await queue.send(message);
    const received = await receive(queueUrl);

    expect(received.map((m) => JSON.parse(m.Body ?? 'null'))).toEqual([message]);
    await sqs.send(
      new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: received[0]?.ReceiptHandle }),
    );
  });

  it('holds a delayed message back until its delay has passed, and cuts a delay past 15 minutes to it', async () => {
    const url = await createQueue(`ferry-${randomUUID().slice(0, 8)}-delays`);
    const delayed = new SqsJobQueue(url, sqs);

    const sent = Date.now();
    await delayed.send({ executionId: 'soon' }, { delaySeconds: 2 });
    await delayed.send({ executionId: 'much-later' }, { delaySeconds: 3600 });

    expect(await receive(url)).toEqual([]);
    expect(await counts(url)).toEqual({ visible: 0, delayed: 2, inFlight: 0 });
    // A long poll: an emulator may let a delayed message out a moment after its delay.
    const arrived = await receive(url, 10);
    expect(Date.now() - sent).toBeGreaterThanOrEqual(2000);
    expect(arrived.map((m) => JSON.parse(m.Body ?? 'null'))).toEqual([{ executionId: 'soon' }]);
    expect(await counts(url)).toMatchObject({ delayed: 1 });
  });

  it('moves a message that was received the allowed number of times to the dead-letter queue', async () => {
    const message = { executionId: `exec-${randomUUID()}` };
    await queue.send(message);
    const seen: string[] = [];

    for (let attempt = 1; attempt <= MAX_RECEIVES + 1; attempt++) {
      const received = (await receive(queueUrl)).filter((m) => m.Body === JSON.stringify(message));
      seen.push(...received.map((m) => m.Attributes?.ApproximateReceiveCount ?? '?'));
      // A failed delivery: the dispatcher reports it, and the message comes back at once.
      for (const m of received) {
        await sqs.send(
          new ChangeMessageVisibilityCommand({
            QueueUrl: queueUrl,
            ReceiptHandle: m.ReceiptHandle,
            VisibilityTimeout: 0,
          }),
        );
      }
    }

    expect(seen).toEqual(['1', '2', '3']);
    const dead = await receive(deadLetterQueueUrl);
    expect(dead.map((m) => JSON.parse(m.Body ?? 'null'))).toEqual([message]);
  });
});
