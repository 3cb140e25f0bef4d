// The stack's EventBridge rules, on the emulator's own EventBridge (moto's or LocalStack's):
// each rule is created there with the pattern the template gives it, events are put on the
// default bus as ECS would put them, and the emulator decides which rules match and builds
// the event each target receives. A Lambda target cannot run inside the emulator, so each
// target is stood in for by an SQS queue on the emulator; this bus reads those queues and
// hands every event to `deliver`, which invokes the function as EventBridge would.
import {
  type EventBridgeClient,
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
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { Logger } from '../../logger.ts';
import { queueDepth } from './sqs-poller.ts';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface BusRule {
  readonly logicalId: string;
  /** The rule's pattern, resolved. */
  readonly pattern: Json;
  /** The rule's targets, as the template writes them. */
  readonly targets: readonly Record<string, Json>[];
}

interface Route {
  readonly queueUrl: string;
  readonly target: Record<string, Json>;
}

export interface EventBusOptions {
  readonly eventbridge: EventBridgeClient;
  readonly sqs: SQSClient;
  /** Prefix of the rules and queues this bus creates (unique per deployment). */
  readonly prefix: string;
  readonly rules: readonly BusRule[];
  /**
   * Takes one event for one target. It counts as in flight until this resolves; the delivery
   * it starts (retries included) is the caller's to track.
   */
  readonly deliver: (target: Record<string, Json>, event: Record<string, Json>) => Promise<void>;
  readonly waitSeconds: number;
  readonly log: Logger;
}

export class EmulatedEventBus {
  private putting: Promise<unknown> = Promise.resolve();
  private pendingPuts = 0;
  private handling = 0;
  private stopped = false;
  private readonly loops: Promise<void>[] = [];

  private constructor(
    private readonly routes: readonly Route[],
    private readonly options: EventBusOptions,
  ) {}

  static async create(options: EventBusOptions): Promise<EmulatedEventBus> {
    const routes: Route[] = [];
    for (const rule of options.rules) {
      const name = `${options.prefix}-${rule.logicalId}`.slice(0, 64);
      await options.eventbridge.send(
        new PutRuleCommand({ Name: name, EventPattern: JSON.stringify(rule.pattern) }),
      );
      const targets = [];
      for (const target of rule.targets) {
        const queueName = `${options.prefix}-target-${routes.length}`;
        const created = await options.sqs.send(new CreateQueueCommand({ QueueName: queueName }));
        const queueUrl = created.QueueUrl ?? '';
        const attributes = await options.sqs.send(
          new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['QueueArn'] }),
        );
        routes.push({ queueUrl, target });
        targets.push({
          Id: String(target.Id ?? `Target${targets.length}`),
          Arn: attributes.Attributes?.QueueArn,
        });
      }
      await options.eventbridge.send(new PutTargetsCommand({ Rule: name, Targets: targets }));
    }
    return new EmulatedEventBus(routes, options);
  }

  start(): void {
    for (const route of this.routes) this.loops.push(this.consume(route));
  }

  /** Puts an event on the default bus; events are put in the order they are given. */
  put(entry: PutEventsRequestEntry): void {
    this.pendingPuts += 1;
    this.putting = this.putting
      .then(async () => {
        const answer = await this.options.eventbridge.send(new PutEventsCommand({ Entries: [entry] }));
        if ((answer.FailedEntryCount ?? 0) > 0) {
          this.options.log.error('the emulator refused an event', { entry: answer.Entries?.[0] });
        }
      })
      .catch((error: unknown) => this.options.log.error('an event could not be put on the bus', { error }))
      .finally(() => {
        this.pendingPuts -= 1;
      });
  }

  /** True while an event is being put, waits in a target's queue, or is being handed on. */
  async busy(): Promise<boolean> {
    if (this.pendingPuts > 0 || this.handling > 0) return true;
    for (const route of this.routes) {
      if ((await queueDepth(this.options.sqs, route.queueUrl)) > 0) return true;
    }
    return this.pendingPuts > 0 || this.handling > 0;
  }

  async close(): Promise<void> {
    this.stopped = true;
    await this.putting;
    await Promise.all(this.loops);
  }

  private async consume(route: Route): Promise<void> {
    while (!this.stopped) {
      try {
        const received = await this.options.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: route.queueUrl,
            MaxNumberOfMessages: 10,
            WaitTimeSeconds: this.options.waitSeconds,
          }),
        );
        for (const message of received.Messages ?? []) {
          this.handling += 1;
          try {
            await this.options.deliver(
              route.target,
              JSON.parse(message.Body ?? '{}') as Record<string, Json>,
            );
            await this.options.sqs.send(
              new DeleteMessageCommand({ QueueUrl: route.queueUrl, ReceiptHandle: message.ReceiptHandle }),
            );
          } finally {
            this.handling -= 1;
          }
        }
      } catch (error) {
        if (this.stopped) return;
        this.options.log.error('reading a rule target’s queue failed', { queue: route.queueUrl, error });
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  }
}
