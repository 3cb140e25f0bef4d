// Lambda events as AWS delivers them: API Gateway HTTP API v2 requests, SQS batches and
// ECS task state changes (built from what DescribeTasks reports).
import { randomUUID } from 'node:crypto';
import type { Task } from '@aws-sdk/client-ecs';
import type { Message } from '@aws-sdk/client-sqs';
import type { Context, SQSEvent } from 'aws-lambda';
import type { ApiEvent } from '../../functions/api.ts';
import type { TaskStateChangeDetail, TaskStateChangeEvent } from '../../shared/domain/task-event.ts';
import { apiGatewayEvent } from '../../shared/http/api-gateway-event.ts';

export const lambdaContext = {
  callbackWaitsForEmptyEventLoop: false,
  functionName: 'ferry-test',
  functionVersion: '$LATEST',
  invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:ferry-test',
  memoryLimitInMB: '1024',
  awsRequestId: 'test',
  logGroupName: '/aws/lambda/ferry-test',
  logStreamName: 'test',
  getRemainingTimeInMillis: () => 29_000,
  done: () => undefined,
  fail: () => undefined,
  succeed: () => undefined,
} satisfies Context;

export function apiEvent(
  method: string,
  path: string,
  options: { body?: unknown; owner?: string; query?: string; headers?: Record<string, string> } = {},
): ApiEvent {
  return apiGatewayEvent({
    method,
    path,
    query: options.query ?? '',
    headers: { 'content-type': 'application/json', ...options.headers },
    ...(options.body === undefined ? {} : { body: Buffer.from(JSON.stringify(options.body)) }),
    caller: options.owner ?? 'arn:aws:iam::123456789012:user/alice',
    accountId: '123456789012',
  });
}

export function sqsEvent(
  messages: readonly Message[],
  queueArn = 'arn:aws:sqs:us-east-1:123456789012:ferry',
): SQSEvent {
  return {
    Records: messages.map((m) => ({
      messageId: m.MessageId ?? randomUUID(),
      receiptHandle: m.ReceiptHandle ?? '',
      body: m.Body ?? '',
      attributes: {
        ApproximateReceiveCount: m.Attributes?.ApproximateReceiveCount ?? '1',
        SentTimestamp: String(Date.now()),
        SenderId: 'test',
        ApproximateFirstReceiveTimestamp: String(Date.now()),
      },
      messageAttributes: {},
      md5OfBody: m.MD5OfBody ?? '',
      eventSource: 'aws:sqs',
      eventSourceARN: queueArn,
      awsRegion: 'us-east-1',
    })),
  };
}

/** The EventBridge event for a task as DescribeTasks shows it, with `change` laid over its detail. */
export function taskEvent(
  task: Task,
  change: Partial<TaskStateChangeDetail> & { version: number },
): TaskStateChangeEvent {
  const detail: TaskStateChangeDetail = {
    taskArn: task.taskArn ?? '',
    ...(task.clusterArn === undefined ? {} : { clusterArn: task.clusterArn }),
    lastStatus: task.lastStatus ?? 'RUNNING',
    ...(task.desiredStatus === undefined ? {} : { desiredStatus: task.desiredStatus }),
    ...(task.startedBy === undefined ? {} : { startedBy: task.startedBy }),
    ...(task.stopCode === undefined ? {} : { stopCode: task.stopCode }),
    ...(task.stoppedReason === undefined ? {} : { stoppedReason: task.stoppedReason }),
    containers: (task.containers ?? []).map((c) => ({
      name: c.name ?? '',
      ...(c.lastStatus === undefined ? {} : { lastStatus: c.lastStatus }),
      ...(c.exitCode === undefined ? {} : { exitCode: c.exitCode }),
      ...(c.reason === undefined ? {} : { reason: c.reason }),
    })),
    ...(task.startedAt === undefined ? {} : { startedAt: task.startedAt.toISOString() }),
    ...change,
  };
  return {
    version: '0',
    id: randomUUID(),
    'detail-type': 'ECS Task State Change',
    source: 'aws.ecs',
    account: '123456789012',
    time: new Date().toISOString(),
    region: 'us-east-1',
    resources: [detail.taskArn],
    detail,
  };
}
