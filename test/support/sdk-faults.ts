// SDK middleware for the AWS suites and the bench: a record of the calls Ferry's code makes,
// and the faults an emulator cannot produce (throttling, Fargate capacity, registration races)
// laid over a real client, which passes every other call through to the emulator.
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  ClientException,
  type ECSClient,
  ECSServiceException,
  InvalidParameterException,
  ServerException,
} from '@aws-sdk/client-ecs';
import type { S3Client } from '@aws-sdk/client-s3';
import type { SQSClient } from '@aws-sdk/client-sqs';
import {
  type RunTaskRules,
  runTaskViolations,
  type TaskDefinitionRules,
  taskDefinitionViolations,
} from '../../shared/domain/fargate-rules.ts';

export type AwsClient = DynamoDBClient | SQSClient | S3Client | ECSClient;

type Middleware = (
  next: (args: unknown) => Promise<unknown>,
  context: { readonly clientName?: string; readonly commandName?: string },
) => (args: unknown) => Promise<unknown>;

/**
 * Adds a middleware that runs once per call, before the SDK serialises or retries it. Every
 * client's stack works alike; their types differ only in the shapes each service carries.
 */
function addFirst(client: AwsClient, name: string, middleware: Middleware): void {
  const stack = client.middlewareStack as unknown as {
    add(middleware: Middleware, options: { step: 'initialize'; name: string; priority: 'high' }): void;
  };
  stack.add(middleware, { step: 'initialize', name, priority: 'high' });
}

export interface RecordedCall {
  /** The service, as the SDK names its client: `DynamoDB`, `SQS`, `S3`, `ECS`. */
  readonly service: string;
  /** The API operation: `TransactWriteItems`, `RunTask`, … */
  readonly operation: string;
}

/**
 * Records every command sent through `client`, once per call however often the SDK retries it.
 * Presigned URLs go through the same stack but never reach AWS; they are not recorded.
 */
export function recordCalls(client: AwsClient, calls: RecordedCall[]): RecordedCall[] {
  addFirst(client, 'ferryRecordCalls', (next, context) => async (args) => {
    let presigned = false;
    try {
      const result = (await next(args)) as { output?: { presigned?: unknown } };
      presigned = result.output?.presigned !== undefined;
      return result;
    } finally {
      // A call that failed was made all the same.
      if (!presigned) {
        calls.push({
          service: (context.clientName ?? 'Unknown').replace(/Client$/, ''),
          operation: (context.commandName ?? 'Unknown').replace(/Command$/, ''),
        });
      }
    }
  });
  return calls;
}

/**
 * Holds every task definition registered and every RunTask sent through `client` to Fargate's
 * rules, where the emulator is lenient: a call that breaks one fails before it is sent, and
 * its violations are added to `violations` so a suite can also assert on them afterwards.
 * A RunTask whose definition was registered through a client sharing `registered` is also
 * checked against that definition.
 */
export function enforceFargateRules(
  client: ECSClient,
  violations: string[] = [],
  /** Definitions registered so far by family, shared between clients that share an emulator. */
  registered = new Map<string, TaskDefinitionRules>(),
): string[] {
  addFirst(client, 'ferryFargateRules', (next, context) => async (args) => {
    const input = (args as { input: Record<string, unknown> }).input;
    let found: string[] = [];
    if (context.commandName === 'RegisterTaskDefinitionCommand') {
      const definition = input as TaskDefinitionRules;
      found = taskDefinitionViolations(definition).map(
        (v) => `RegisterTaskDefinition ${definition.family}: ${v}`,
      );
      if (definition.family !== undefined) registered.set(definition.family, definition);
    } else if (context.commandName === 'RunTaskCommand') {
      // `family`, `family:revision` or an ARN ending in `task-definition/family:revision`.
      const family = String(input.taskDefinition ?? '')
        .replace(/^.*task-definition\//, '')
        .replace(/:\d+$/, '');
      found = runTaskViolations(input as RunTaskRules, registered.get(family)).map((v) => `RunTask: ${v}`);
    }
    if (found.length > 0) {
      violations.push(...found);
      throw new Error(`Fargate would refuse this call: ${found.join('; ')}`);
    }
    return next(args);
  });
  return violations;
}

/** An error as the SDK reports it, or an answer as AWS would give it. */
export type Fault = { readonly throws: Error } | { readonly answers: Record<string, unknown> };

/** The ECS errors the SDK has classes for, among those the suites inject. */
const MODELED = { ClientException, InvalidParameterException, ServerException } as const;

/**
 * An ECS error the way the SDK builds one from the service's reply: an instance of the modeled
 * class when ECS models the code, otherwise of the service's base class with the code as name
 * (ECS does not model ThrottlingException, for one).
 */
export function ecsError(name: string, message: string): Fault {
  const $metadata = {
    httpStatusCode: name === 'ServerException' ? 500 : 400,
    attempts: 1,
    totalRetryDelay: 0,
  };
  const Modeled = MODELED[name as keyof typeof MODELED];
  return {
    throws:
      Modeled === undefined
        ? new ECSServiceException({ name, $fault: 'client', message, $metadata })
        : new Modeled({ message, $metadata }),
  };
}

export const throttling = (): Fault => ecsError('ThrottlingException', 'Rate exceeded');

/** RunTask's "success" that started nothing because Fargate had no capacity in the zone. */
export const capacityUnavailable = (): Fault => ({
  answers: {
    $metadata: { httpStatusCode: 200 },
    tasks: [],
    failures: [
      {
        reason:
          'Capacity is unavailable at this time. Please try again later or in a different availability zone',
      },
    ],
  },
});

/**
 * Faults for chosen operations of a real client: each queued fault answers one call, in
 * order; a standing fault answers every call until healed; other calls reach the emulator.
 * `calls` lists every call Ferry made, faulted or not.
 */
export class FaultInjector {
  readonly calls: string[] = [];
  private readonly queued = new Map<string, Fault[]>();
  private readonly standing = new Map<string, Fault>();

  constructor(client: AwsClient) {
    addFirst(client, 'ferryFaults', (next, context) => async (args) => {
      const operation = (context.commandName ?? '').replace(/Command$/, '');
      this.calls.push(operation);
      const fault = this.queued.get(operation)?.shift() ?? this.standing.get(operation);
      if (fault === undefined) return next(args);
      if ('throws' in fault) throw fault.throws;
      return { output: fault.answers, response: {} };
    });
  }

  /** The next calls of `operation` meet these faults, one each. */
  next(operation: string, ...faults: Fault[]): this {
    this.queued.set(operation, [...(this.queued.get(operation) ?? []), ...faults]);
    return this;
  }

  /** Every call of `operation` meets `fault` until `heal`. */
  always(operation: string, fault: Fault): this {
    this.standing.set(operation, fault);
    return this;
  }

  heal(operation: string): this {
    this.queued.delete(operation);
    this.standing.delete(operation);
    return this;
  }

  count(operation: string): number {
    return this.calls.filter((call) => call === operation).length;
  }
}
