// The EventBridge rule that carries ECS task state changes to Ferry, against the emulator:
// the pattern of infra/ferry-executor.ts ('TaskStateChanges') takes a change of Ferry's
// cluster to its target whole, and leaves other clusters' changes and other ECS events alone.
// The target here is an SQS queue (the rule's dead-letter queue is one), read like a Lambda's
// event would be.
import { randomUUID } from 'node:crypto';
import {
  EventBridgeClient,
  PutEventsCommand,
  type PutEventsRequestEntry,
  PutRuleCommand,
  PutTargetsCommand,
} from '@aws-sdk/client-eventbridge';
import {
  CreateQueueCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SetQueueAttributesCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { TaskStateChangeDetail } from '../../shared/domain/task-event.ts';
import { clientConfig, REGION } from '../support/aws.ts';

const ACCOUNT = '123456789012';
const clusterArn = (name: string) => `arn:aws:ecs:${REGION}:${ACCOUNT}:cluster/${name}`;

function taskChange(cluster: string, lastStatus: string): TaskStateChangeDetail {
  const taskArn = `arn:aws:ecs:${REGION}:${ACCOUNT}:task/${cluster}/${randomUUID().replaceAll('-', '')}`;
  return {
    taskArn,
    clusterArn: clusterArn(cluster),
    lastStatus,
    desiredStatus: 'STOPPED',
    startedBy: `exec-${randomUUID().slice(0, 8)}`,
    stopCode: 'EssentialContainerExited',
    containers: [{ name: 'job', lastStatus: 'STOPPED', exitCode: 3 }],
    version: 4,
  };
}

/** An EventBridge event as its SQS target receives it: the whole envelope, as JSON. */
interface DeliveredEvent {
  readonly version: string;
  readonly id: string;
  readonly 'detail-type': string;
  readonly source: string;
  readonly account: string;
  readonly time: string;
  readonly region: string;
  readonly resources: readonly string[];
  readonly detail: TaskStateChangeDetail;
}

/** The entry ECS would put on the default bus for this change. */
const fromEcs = (
  detail: TaskStateChangeDetail,
  detailType = 'ECS Task State Change',
): PutEventsRequestEntry => ({
  Source: 'aws.ecs',
  DetailType: detailType,
  Resources: [detail.taskArn],
  Detail: JSON.stringify(detail),
});

describe('EventBridge rule for task state changes, to an SQS target', () => {
  const events = new EventBridgeClient(clientConfig('eventbridge'));
  const sqs = new SQSClient(clientConfig('sqs'));
  const cluster = `ferry-${randomUUID().slice(0, 8)}`;
  let queueUrl: string;

  /** What the rule delivered: `expected` events, then whatever else arrives in the next second. */
  async function delivered(expected: number): Promise<DeliveredEvent[]> {
    const bodies: DeliveredEvent[] = [];
    const deadline = Date.now() + 20_000;
    for (;;) {
      const waiting = bodies.length < expected && Date.now() < deadline;
      const { Messages = [] } = await sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: waiting ? 2 : 1,
        }),
      );
      for (const message of Messages) {
        bodies.push(JSON.parse(message.Body ?? 'null') as DeliveredEvent);
        await sqs.send(
          new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle }),
        );
      }
      if (!waiting && (Messages.length === 0 || Date.now() > deadline + 5_000)) return bodies;
    }
  }

  beforeAll(async () => {
    const queue = await sqs.send(new CreateQueueCommand({ QueueName: `${cluster}-task-events` }));
    queueUrl = queue.QueueUrl ?? '';
    const { Attributes = {} } = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] }),
    );
    const queueArn = Attributes.QueueArn ?? '';
    const rule = await events.send(
      new PutRuleCommand({
        Name: `${cluster}-task-state-changes`,
        EventPattern: JSON.stringify({
          source: ['aws.ecs'],
          'detail-type': ['ECS Task State Change'],
          detail: { clusterArn: [clusterArn(cluster)] },
        }),
      }),
    );
    // What AWS needs before the rule may send to the queue; the emulators do not check it.
    await sqs.send(
      new SetQueueAttributesCommand({
        QueueUrl: queueUrl,
        Attributes: {
          Policy: JSON.stringify({
            Version: '2012-10-17',
            Statement: [
              {
                Effect: 'Allow',
                Principal: { Service: 'events.amazonaws.com' },
                Action: 'sqs:SendMessage',
                Resource: queueArn,
                Condition: { ArnEquals: { 'aws:SourceArn': rule.RuleArn } },
              },
            ],
          }),
        },
      }),
    );
    const targets = await events.send(
      new PutTargetsCommand({
        Rule: `${cluster}-task-state-changes`,
        Targets: [{ Id: 'task-events', Arn: queueArn }],
      }),
    );
    expect(targets.FailedEntryCount).toBe(0);
  });

  it("delivers a change of Ferry's cluster once, with its detail intact", async () => {
    const change = taskChange(cluster, 'STOPPED');

    const put = await events.send(new PutEventsCommand({ Entries: [fromEcs(change)] }));
    const bodies = await delivered(1);

    expect(put.FailedEntryCount).toBe(0);
    expect(bodies).toEqual([
      expect.objectContaining({
        version: '0',
        id: put.Entries?.[0]?.EventId,
        'detail-type': 'ECS Task State Change',
        source: 'aws.ecs',
        region: REGION,
        resources: [change.taskArn],
        detail: change,
      }),
    ]);
    expect(Number.isNaN(Date.parse(bodies[0]?.time ?? ''))).toBe(false);
  });

  it('leaves changes of another cluster and other ECS events alone', async () => {
    const ours = taskChange(cluster, 'RUNNING');
    const others = taskChange(`${cluster}-other`, 'STOPPED');

    // Sent first, so that by the time ours arrives theirs would have too.
    await events.send(new PutEventsCommand({ Entries: [fromEcs(others)] }));
    await events.send(
      new PutEventsCommand({
        Entries: [fromEcs(taskChange(cluster, 'STOPPED'), 'ECS Container Instance State Change')],
      }),
    );
    await events.send(new PutEventsCommand({ Entries: [fromEcs(ours)] }));
    const bodies = await delivered(1);

    expect(bodies.map((body) => body.detail)).toEqual([ours]);
  });
});
