// How the Fargate backend and the dispatcher behave when AWS says no: throttling and Fargate
// capacity errors are retried with growing pauses and end in a launch; an invalid request
// fails the execution with the reason. The emulator cannot throttle or run out of capacity,
// so those answers are injected in front of a real client; everything else reaches moto.
import { ECSClient, ListTaskDefinitionsCommand, ListTasksCommand } from '@aws-sdk/client-ecs';
import { DeleteMessageCommand, GetQueueAttributesCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { beforeAll, describe, expect, it } from 'vitest';
import { EcsBackend } from '../../shared/adapters/aws/ecs-backend.ts';
import type { AwsSettings } from '../../shared/config.ts';
import type { Core } from '../../shared/core.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import { BackendError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { DispatchMessage } from '../../shared/ports.ts';
import { buildAwsCore } from '../../shared/runtime/aws.ts';
import { submitJob } from '../../shared/use-cases/bids.ts';
import { dispatch } from '../../shared/use-cases/dispatch.ts';
import { type AwsEnvironment, awsConfig, clientConfig, createAwsEnvironment } from '../support/aws.ts';
import { ticket } from '../support/fixtures.ts';
import {
  capacityUnavailable,
  ecsError,
  type Fault,
  FaultInjector,
  throttling,
} from '../support/sdk-faults.ts';

const OWNER = 'arn:aws:iam::123456789012:user/alice';
const job = { image: 'public.ecr.aws/docker/library/alpine:3.20', command: ['echo', 'hi'] };

/** An ECS client on the emulator with faults laid over it. */
function faultyEcs(): { client: ECSClient; faults: FaultInjector } {
  const client = new ECSClient(clientConfig('ecs'));
  return { client, faults: new FaultInjector(client) };
}

/** The dependencies a dispatcher Lambda builds at cold start, with this ECS client. */
function dispatcherCore(aws: AwsEnvironment, ecs: ECSClient, extra: Record<string, string> = {}): Core {
  const core = buildAwsCore(awsConfig(aws, extra), { ...aws.clients, ecs }, silentLogger);
  // Deferrals wait deferSeconds × 2^n; one second keeps the redelivery within a test's patience.
  return { ...core, settings: { ...core.settings, deferSeconds: 1 } };
}

/** What the SQS event source does: take the next message, hand it to the dispatcher, delete it if that succeeded. */
async function deliverNext(aws: AwsEnvironment, core: Core, waitSeconds = 0) {
  const { Messages = [] } = await aws.clients.sqs.send(
    new ReceiveMessageCommand({
      QueueUrl: aws.queueUrl,
      MaxNumberOfMessages: 1,
      WaitTimeSeconds: waitSeconds,
    }),
  );
  const message = Messages[0];
  if (message === undefined) return undefined;
  const body = JSON.parse(message.Body ?? '{}') as DispatchMessage;
  const outcome = await dispatch(core, body);
  await aws.clients.sqs.send(
    new DeleteMessageCommand({ QueueUrl: aws.queueUrl, ReceiptHandle: message.ReceiptHandle }),
  );
  return { body, outcome };
}

async function queueCounts(aws: AwsEnvironment): Promise<{ visible: number; delayed: number }> {
  const { Attributes = {} } = await aws.clients.sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: aws.queueUrl,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesDelayed'],
    }),
  );
  return {
    visible: Number(Attributes.ApproximateNumberOfMessages),
    delayed: Number(Attributes.ApproximateNumberOfMessagesDelayed),
  };
}

async function tasksOf(aws: AwsEnvironment, executionId: string): Promise<string[]> {
  const reply = await aws.clients.ecs.send(
    new ListTasksCommand({ cluster: aws.cluster, startedBy: executionId }),
  );
  return reply.taskArns ?? [];
}

async function stored(core: Core, id: string): Promise<Execution> {
  const execution = await core.store.get(id);
  if (execution === undefined) throw new Error(`no execution ${id}`);
  return execution;
}

describe('ECS faults, in the backend', () => {
  let aws: AwsEnvironment;
  let settings: AwsSettings;

  beforeAll(async () => {
    aws = await createAwsEnvironment();
    const config = awsConfig(aws).aws;
    if (config === undefined) throw new Error('the test environment has no AWS settings');
    settings = config;
  });

  /** A backend on a faulty client that records the pauses it asks for instead of sleeping them. */
  function backendWithFaults(onPause: () => Promise<void> = async () => undefined) {
    const { client, faults } = faultyEcs();
    const pauses: number[] = [];
    const backend = new EcsBackend({
      ...settings,
      client,
      log: silentLogger,
      sleep: async (ms) => {
        pauses.push(ms);
        await onPause();
      },
    });
    return { backend, faults, pauses };
  }

  async function launchable() {
    const core = dispatcherCore(aws, aws.clients.ecs);
    const execution = await submitJob(core, OWNER, job);
    const constraints = execution.bid.constraints;
    if (constraints === undefined) throw new Error('the bid resolved no constraints');
    return { execution, constraints };
  }

  const growing = (pauses: readonly number[]) =>
    pauses.every((ms, i) => i === 0 || ms > (pauses[i - 1] ?? 0));

  it('launches after RunTask is throttled twice, pausing longer each time', async () => {
    const { backend, faults, pauses } = backendWithFaults();
    faults.next('RunTask', throttling(), throttling());
    const { execution, constraints } = await launchable();

    const { taskId } = await backend.launch(execution, constraints, ticket());

    expect(await tasksOf(aws, execution.id)).toEqual([taskId]);
    expect(faults.count('RunTask')).toBe(3);
    expect(pauses).toHaveLength(2);
    expect(growing(pauses)).toBe(true);
  });

  it('gives up on a throttled RunTask with a retryable error', async () => {
    const { backend, faults, pauses } = backendWithFaults();
    faults.always('RunTask', throttling());
    const { execution, constraints } = await launchable();

    const error = await backend.launch(execution, constraints, ticket()).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(BackendError);
    expect(error).toMatchObject({ retryable: true, message: expect.stringContaining('Rate exceeded') });
    expect(faults.count('RunTask')).toBe(3);
    expect(pauses).toHaveLength(2);
    expect(growing(pauses)).toBe(true);
    expect(await tasksOf(aws, execution.id)).toEqual([]);
  });

  it('launches once Fargate has capacity again after RunTask reported none in failures[]', async () => {
    const { backend, faults, pauses } = backendWithFaults();
    faults.next('RunTask', capacityUnavailable(), capacityUnavailable());
    const { execution, constraints } = await launchable();

    const { taskId } = await backend.launch(execution, constraints, ticket());

    expect(await tasksOf(aws, execution.id)).toEqual([taskId]);
    expect(faults.count('RunTask')).toBe(3);
    expect(growing(pauses)).toBe(true);
  });

  it('takes the task an earlier attempt started when RunTask refuses its token with another secret', async () => {
    const { backend, faults } = backendWithFaults();
    const { execution, constraints } = await launchable();
    const first = await backend.launch(execution, constraints, ticket());
    // ECS's answer to the same client token with different overrides (this attempt's secret).
    faults.next(
      'RunTask',
      ecsError(
        'ConflictException',
        'The request could not be processed because of conflict in the current state of the resource.',
      ),
    );

    const second = await backend.launch(execution, constraints, ticket());

    expect(second.taskId).toBe(first.taskId);
    expect(await tasksOf(aws, execution.id)).toEqual([first.taskId]);
    expect(faults.count('RunTask')).toBe(2);
  });

  it('calls a lasting capacity shortage retryable, naming the reason', async () => {
    const { backend, faults } = backendWithFaults();
    faults.always('RunTask', capacityUnavailable());
    const { execution, constraints } = await launchable();

    const error = await backend.launch(execution, constraints, ticket()).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(BackendError);
    expect(error).toMatchObject({
      retryable: true,
      message: expect.stringContaining('Capacity is unavailable at this time'),
    });
  });

  it('does not retry an invalid request', async () => {
    const { backend, faults, pauses } = backendWithFaults();
    faults.always(
      'RunTask',
      ecsError(
        'InvalidParameterException',
        'No Fargate configuration exists for given values: 3000 CPU, 1024 memory.',
      ),
    );
    const { execution, constraints } = await launchable();

    const error = await backend.launch(execution, constraints, ticket()).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(BackendError);
    expect(error).toMatchObject({
      retryable: false,
      message:
        'InvalidParameterException: No Fargate configuration exists for given values: 3000 CPU, 1024 memory.',
    });
    expect(faults.count('RunTask')).toBe(1);
    expect(pauses).toEqual([]);
  });

  it('registers the task definition after "too many concurrent attempts", once', async () => {
    const image = 'public.ecr.aws/docker/library/busybox:1.36';
    const { backend, faults, pauses } = backendWithFaults();
    faults.next(
      'RegisterTaskDefinition',
      ecsError(
        'ClientException',
        'Too many concurrent attempts to create a new revision of the specified family.',
      ),
    );

    const arn = await backend.ensureTaskDefinition(image);

    const family = backend.taskDefinitionFor(image).family;
    expect(arn).toContain(`:task-definition/${family}:1`);
    expect(faults.calls).toEqual([
      'DescribeTaskDefinition',
      'RegisterTaskDefinition',
      'DescribeTaskDefinition',
      'RegisterTaskDefinition',
    ]);
    expect(pauses).toHaveLength(1);
    const revisions = await aws.clients.ecs.send(new ListTaskDefinitionsCommand({ familyPrefix: family }));
    expect(revisions.taskDefinitionArns).toEqual([arn]);
  });

  it('takes the revision a racing dispatcher registered rather than adding another', async () => {
    const image = 'public.ecr.aws/docker/library/python:3.12-alpine';
    const rival = new EcsBackend({ ...settings, client: aws.clients.ecs, log: silentLogger });
    // The rival registers while this backend waits out its "too many concurrent attempts".
    const { backend, faults } = backendWithFaults(async () => {
      await rival.ensureTaskDefinition(image);
    });
    faults.next(
      'RegisterTaskDefinition',
      ecsError(
        'ClientException',
        'Too many concurrent attempts to create a new revision of the specified family.',
      ),
    );

    const arn = await backend.ensureTaskDefinition(image);

    expect(faults.calls).toEqual([
      'DescribeTaskDefinition',
      'RegisterTaskDefinition',
      'DescribeTaskDefinition',
    ]);
    const family = backend.taskDefinitionFor(image).family;
    const revisions = await aws.clients.ecs.send(new ListTaskDefinitionsCommand({ familyPrefix: family }));
    expect(revisions.taskDefinitionArns).toEqual([arn]);
  });
});

describe('ECS faults, through the dispatcher', () => {
  it.each([
    ['throttled', throttling()],
    ['out of Fargate capacity', capacityUnavailable()],
  ] as [string, Fault][])(
    'defers a launch while ECS is %s, and launches it on a later delivery',
    async (_, fault) => {
      const aws = await createAwsEnvironment();
      const { client, faults } = faultyEcs();
      faults.always('RunTask', fault);
      const unhealthy = dispatcherCore(aws, client);
      const submitted = await submitJob(unhealthy, OWNER, job);

      const first = await deliverNext(aws, unhealthy);

      expect(first?.outcome).toMatchObject({ outcome: 'deferred' });
      expect(faults.count('RunTask')).toBe(3);
      const deferred = await stored(unhealthy, submitted.id);
      expect(deferred).toMatchObject({ state: 'LAUNCHING', deferrals: 1 });
      expect(deferred.task).toBeUndefined();
      // The retry is a new message, delayed: nothing to receive now.
      expect(await queueCounts(aws)).toEqual({ visible: 0, delayed: 1 });
      expect(await tasksOf(aws, submitted.id)).toEqual([]);

      // A later invocation (another Lambda container, healthy ECS) gets the delayed message.
      const healthy = dispatcherCore(aws, new ECSClient(clientConfig('ecs')));
      const second = await deliverNext(aws, healthy, 10);

      expect(second?.body).toEqual({ executionId: submitted.id, token: submitted.dispatchToken });
      expect(second?.outcome).toMatchObject({ outcome: 'launched' });
      const launched = await stored(healthy, submitted.id);
      expect(launched).toMatchObject({ state: 'LAUNCHING', deferrals: 1 });
      expect(await tasksOf(aws, submitted.id)).toEqual([launched.task?.id]);
      expect(await healthy.ledger.holders()).toEqual([submitted.id]);
      expect(await queueCounts(aws)).toEqual({ visible: 0, delayed: 0 });
    },
  );

  it('fails the execution with the reason when ECS refuses the request', async () => {
    const aws = await createAwsEnvironment();
    const { client, faults } = faultyEcs();
    faults.always(
      'RunTask',
      ecsError(
        'InvalidParameterException',
        'No Fargate configuration exists for given values: 3000 CPU, 1024 memory.',
      ),
    );
    const core = dispatcherCore(aws, client);
    const submitted = await submitJob(core, OWNER, job);

    const delivered = await deliverNext(aws, core);

    expect(delivered?.outcome).toMatchObject({ outcome: 'failed' });
    const failed = await stored(core, submitted.id);
    expect(failed.state).toBe('FAILED');
    expect(failed.reason).toBe(
      'launch failed: InvalidParameterException: No Fargate configuration exists for given values: 3000 CPU, 1024 memory.',
    );
    expect(faults.count('RunTask')).toBe(1);
    expect(await core.ledger.holders()).toEqual([]);
    expect(await queueCounts(aws)).toEqual({ visible: 0, delayed: 0 });
  });

  it('fails the execution with the reason the emulator gives for a cluster that does not exist', async () => {
    const aws = await createAwsEnvironment();
    const core = dispatcherCore(aws, aws.clients.ecs, {
      FERRY_CLUSTER: 'arn:aws:ecs:us-east-1:123456789012:cluster/ferry-no-such-cluster',
    });
    const submitted = await submitJob(core, OWNER, job);

    const delivered = await deliverNext(aws, core);

    expect(delivered?.outcome).toMatchObject({ outcome: 'failed' });
    const failed = await stored(core, submitted.id);
    expect(failed).toMatchObject({
      state: 'FAILED',
      reason: expect.stringMatching(/^launch failed: ClusterNotFoundException/),
    });
    expect(failed.history.map((h) => h.state)).toEqual(['OFFERED', 'QUEUED', 'LAUNCHING', 'FAILED']);
    expect(await core.ledger.holders()).toEqual([]);
    expect(await queueCounts(aws)).toEqual({ visible: 0, delayed: 0 });
  });
});
