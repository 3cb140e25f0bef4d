// The whole AWS path against the emulator, through the same handlers a Lambda deployment
// runs: API event → SQS → dispatcher → ECS task → task state change → COMPLETED with a
// result manifest in S3. Plus the ways AWS really behaves: duplicate deliveries, duplicate
// and reordered events, and a cancel racing the dispatcher.
import { DescribeTasksCommand, ECSClient, ListTasksCommand, type Task } from '@aws-sdk/client-ecs';
import { DeleteMessageCommand, ReceiveMessageCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import { beforeAll, describe, expect, it } from 'vitest';
import { createApiHandler } from '../../functions/api.ts';
import { createDispatcherHandler } from '../../functions/dispatcher.ts';
import { createTaskEventsHandler } from '../../functions/task-events.ts';
import { encodeLive, liveKey } from '../../shared/capture/result-writer.ts';
import { StreamCapture } from '../../shared/capture/stream-capture.ts';
import type { Core } from '../../shared/core.ts';
import type { Execution, ResultManifest } from '../../shared/domain/execution.ts';
import { silentLogger } from '../../shared/logger.ts';
import { buildAwsCore } from '../../shared/runtime/aws.ts';
import {
  type AwsEnvironment,
  awsConfig,
  clientConfig,
  createAwsEnvironment,
  publishResult,
} from '../support/aws.ts';
import { apiEvent, lambdaContext, sqsEvent, taskEvent } from '../support/events.ts';

interface Deployment {
  readonly aws: AwsEnvironment;
  readonly core: Core;
  readonly api: ReturnType<typeof createApiHandler>;
  readonly dispatcher: ReturnType<typeof createDispatcherHandler>;
  readonly taskEvents: ReturnType<typeof createTaskEventsHandler>;
}

function deploy(aws: AwsEnvironment, ecs: ECSClient = aws.clients.ecs): Deployment {
  const core = buildAwsCore(awsConfig(aws), { ...aws.clients, ecs }, silentLogger);
  return {
    aws,
    core,
    api: createApiHandler(core),
    dispatcher: createDispatcherHandler(core),
    taskEvents: createTaskEventsHandler(core),
  };
}

async function call<T>(
  d: Deployment,
  method: string,
  target: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const [path = '', query = ''] = target.split('?');
  const reply = await d.api(
    apiEvent(method, path, { query, ...(body === undefined ? {} : { body }) }),
    lambdaContext,
  );
  return { status: reply.statusCode ?? 0, body: JSON.parse(reply.body ?? 'null') as T };
}

/** What the SQS event source mapping does: receive a batch, invoke, delete what succeeded. */
async function deliverQueue(d: Deployment): Promise<number> {
  const { Messages = [] } = await d.aws.clients.sqs.send(
    new ReceiveMessageCommand({ QueueUrl: d.aws.queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }),
  );
  if (Messages.length === 0) return 0;
  const result = await d.dispatcher(sqsEvent(Messages), lambdaContext);
  const failed = new Set(result.batchItemFailures.map((f) => f.itemIdentifier));
  for (const message of Messages) {
    if (!failed.has(message.MessageId ?? '')) {
      await d.aws.clients.sqs.send(
        new DeleteMessageCommand({ QueueUrl: d.aws.queueUrl, ReceiptHandle: message.ReceiptHandle }),
      );
    }
  }
  return Messages.length;
}

async function describeTask(d: Deployment, taskArn: string): Promise<Task> {
  const reply = await d.aws.clients.ecs.send(
    new DescribeTasksCommand({ cluster: d.aws.cluster, tasks: [taskArn] }),
  );
  const task = reply.tasks?.[0];
  if (task === undefined) throw new Error(`no task ${taskArn}`);
  return task;
}

const exitedWith = (exitCode: number, version: number) => ({
  lastStatus: 'STOPPED',
  desiredStatus: 'STOPPED',
  stopCode: 'EssentialContainerExited',
  stoppedReason: 'Essential container in task exited',
  stoppedAt: new Date().toISOString(),
  containers: [{ name: 'job', lastStatus: 'STOPPED', exitCode }],
  version,
});

const job = {
  image: 'public.ecr.aws/docker/library/alpine:3.20',
  command: ['echo', 'hello'],
  resources: { cpu: 1, memory: '3GiB' },
};

describe('Ferry on AWS (emulated)', () => {
  let aws: AwsEnvironment;

  beforeAll(async () => {
    aws = await createAwsEnvironment();
  });

  it('runs a job end to end: API → SQS → dispatcher → ECS → task events → COMPLETED with its result', async () => {
    const d = deploy(aws);

    const submitted = await call<Execution>(d, 'POST', '/v1/jobs', job);
    expect(submitted.status).toBe(202);
    expect(submitted.body.state).toBe('QUEUED');
    expect(submitted.body.bid.constraints?.fargate).toEqual({
      cpu: '1024',
      memory: '3072',
      ephemeralStorageGiB: 20,
    });
    const id = submitted.body.id;

    expect(await deliverQueue(d)).toBe(1);
    const launching = await call<Execution>(d, 'GET', `/v1/executions/${id}`);
    expect(launching.body.reason).toBeUndefined();
    expect(launching.body.state).toBe('LAUNCHING');
    const taskArn = launching.body.task?.id ?? '';
    const task = await describeTask(d, taskArn);
    expect(task.startedBy).toBe(id);
    expect(task.overrides?.cpu).toBe('1024');
    expect(task.overrides?.memory).toBe('3072');
    expect(task.overrides?.containerOverrides?.[0]?.command).toEqual([
      '--io',
      '/ferry/io',
      '--timeout',
      '3600',
      '--',
      'echo',
      'hello',
    ]);

    await d.taskEvents(taskEvent(task, { lastStatus: 'RUNNING', version: 2 }), lambdaContext);
    expect((await call<Execution>(d, 'GET', `/v1/executions/${id}`)).body.state).toBe('RUNNING');

    await publishResult(d.aws, id, 'hello\n', 0);
    await d.taskEvents(taskEvent(task, exitedWith(0, 3)), lambdaContext);

    const done = await call<Execution>(d, 'GET', `/v1/executions/${id}/wait?timeoutSeconds=0`);
    expect(done.body).toMatchObject({ state: 'COMPLETED', exitCode: 0, result: { review: 'PENDING' } });
    const result = await call<{ manifest: ResultManifest; links: { stdout: string } }>(
      d,
      'GET',
      `/v1/executions/${id}/result`,
    );
    expect(result.status).toBe(200);
    expect(result.body.manifest).toMatchObject({
      executionId: id,
      exitCode: 0,
      stdout: { totalBytes: 6, inline: 'hello\n' },
    });
    const download = await fetch(result.body.links.stdout);
    expect(await download.text()).toBe('hello\n');
    const logs = await d.api(
      apiEvent('GET', `/v1/executions/${id}/logs`, { query: 'stream=stdout' }),
      lambdaContext,
    );
    expect(Buffer.from(logs.body ?? '', 'base64').toString()).toBe('hello\n');
  });

  it('follows the live output the publisher refreshes in S3 while the job runs', async () => {
    const d = deploy(aws);
    const id = (await call<Execution>(d, 'POST', '/v1/jobs', job)).body.id;
    await deliverQueue(d);
    const taskArn = (await call<Execution>(d, 'GET', `/v1/executions/${id}`)).body.task?.id ?? '';
    await d.taskEvents(
      taskEvent(await describeTask(d, taskArn), { lastStatus: 'RUNNING', version: 2 }),
      lambdaContext,
    );
    const capture = new StreamCapture({ storedBytes: 1024, inlineBytes: 64, keep: 'head+tail' });
    capture.write(Buffer.from('line 1\nline 2\n'));
    await d.core.objects.put(liveKey(id, 'stdout'), encodeLive(capture));

    const follow = (offset: number) =>
      d.api(
        apiEvent('GET', `/v1/executions/${id}/logs`, {
          query: `stream=stdout&follow=true&offset=${offset}&waitSeconds=0`,
        }),
        lambdaContext,
      );
    const first = await follow(0);
    expect(Buffer.from(first.body ?? '', 'base64').toString()).toBe('line 1\nline 2\n');
    expect(first.headers).toMatchObject({
      'ferry-next-offset': '14',
      'ferry-complete': 'false',
      'ferry-state': 'RUNNING',
    });

    capture.write(Buffer.from('line 3\n'));
    await d.core.objects.put(liveKey(id, 'stdout'), encodeLive(capture));
    const next = await follow(14);
    expect(Buffer.from(next.body ?? '', 'base64').toString()).toBe('line 3\n');
    expect(next.headers).toMatchObject({ 'ferry-next-offset': '21' });
  });

  it('launches one task when the same message is delivered three times', async () => {
    const d = deploy(aws);
    const submitted = await call<Execution>(d, 'POST', '/v1/jobs', job);
    const id = submitted.body.id;
    const body = JSON.stringify({ executionId: id, token: submitted.body.dispatchToken });
    for (let i = 0; i < 2; i++)
      await aws.clients.sqs.send(new SendMessageCommand({ QueueUrl: aws.queueUrl, MessageBody: body }));

    while ((await deliverQueue(d)) > 0) {
      // drain: the accept's own message and the two copies
    }

    const tasks = await aws.clients.ecs.send(new ListTasksCommand({ cluster: aws.cluster, startedBy: id }));
    expect(tasks.taskArns).toHaveLength(1);
  });

  it('ends in the right state when events come twice and in reverse order', async () => {
    const d = deploy(aws);
    const id = (await call<Execution>(d, 'POST', '/v1/jobs', job)).body.id;
    await deliverQueue(d);
    const taskArn = (await call<Execution>(d, 'GET', `/v1/executions/${id}`)).body.task?.id ?? '';
    const task = await describeTask(d, taskArn);
    await publishResult(d.aws, id, 'done\n', 3);

    const stopped = taskEvent(task, exitedWith(3, 4));
    const running = taskEvent(task, { lastStatus: 'RUNNING', version: 2 });
    const pending = taskEvent(task, { lastStatus: 'PENDING', version: 1 });
    for (const event of [stopped, running, stopped, pending, running])
      await d.taskEvents(event, lambdaContext);

    const final = (await call<Execution>(d, 'GET', `/v1/executions/${id}`)).body;
    expect(final).toMatchObject({ state: 'COMPLETED', exitCode: 3 });
    expect(final.history.map((h) => h.state)).toEqual(['OFFERED', 'QUEUED', 'LAUNCHING', 'COMPLETED']);
  });

  it('ends CANCELLED with no task running when a cancel races the dispatcher', async () => {
    // The cancel lands between the dispatcher's LAUNCHING write and its RunTask call.
    let id = '';
    let d: Deployment | undefined;
    const ecs = new ECSClient(clientConfig('ecs'));
    ecs.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'RunTaskCommand' && d !== undefined) {
          const reply = await call<Execution>(d, 'POST', `/v1/executions/${id}/cancel`);
          expect(reply.status).toBe(202);
        }
        return next(args);
      },
      { step: 'initialize', name: 'cancelBeforeRunTask' },
    );
    d = deploy(aws, ecs);
    id = (await call<Execution>(d, 'POST', '/v1/jobs', job)).body.id;

    await deliverQueue(d);

    const afterLaunch = (await call<Execution>(d, 'GET', `/v1/executions/${id}`)).body;
    expect(afterLaunch.stopRequested?.intent).toBe('cancel');
    const taskArn = afterLaunch.task?.id ?? '';
    const task = await describeTask(d, taskArn);
    expect(task.desiredStatus).toBe('STOPPED');
    const running = await aws.clients.ecs.send(
      new ListTasksCommand({ cluster: aws.cluster, startedBy: id, desiredStatus: 'RUNNING' }),
    );
    expect(running.taskArns ?? []).toEqual([]);

    await d.taskEvents(
      taskEvent(task, { lastStatus: 'STOPPED', stopCode: 'UserInitiated', version: 3 }),
      lambdaContext,
    );
    expect((await call<Execution>(d, 'GET', `/v1/executions/${id}`)).body.state).toBe('CANCELLED');
  });
});
