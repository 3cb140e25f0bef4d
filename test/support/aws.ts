// Per-run AWS resources on the emulator: a table, queues, a bucket and a cluster with
// fresh names, and SDK clients pointed at the emulator that answers for each service.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateSecurityGroupCommand, DescribeSubnetsCommand, EC2Client } from '@aws-sdk/client-ec2';
import { CreateClusterCommand, DescribeTasksCommand, ECSClient } from '@aws-sdk/client-ecs';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { CreateQueueCommand, GetQueueAttributesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { inject } from 'vitest';
import { S3ObjectStore } from '../../shared/adapters/aws/s3-object-store.ts';
import { PRESIGNING_CONFIG } from '../../shared/adapters/aws/s3-upload-signer.ts';
import { tableDefinition } from '../../shared/adapters/aws/table.ts';
import { storeResult } from '../../shared/capture/result-writer.ts';
import { StreamCapture } from '../../shared/capture/stream-capture.ts';
import { loadConfig } from '../../shared/config.ts';
import type { Core } from '../../shared/core.ts';
import { submitJob } from '../../shared/use-cases/bids.ts';
import { dispatch } from '../../shared/use-cases/dispatch.ts';
import type { AwsService } from '../global-setup.ts';

export const REGION = 'us-east-1';

/**
 * Where `service` answers: the endpoint the test setup gives it (LocalStack's, or what
 * AWS_ENDPOINT_URL_<SERVICE> names), else the emulator's. `endpoint`, given outside vitest
 * (the bench), stands for every service.
 */
export function endpointFor(service: AwsService, endpoint?: string): string {
  return endpoint ?? inject('awsServiceEndpoints')[service] ?? inject('awsEndpoint');
}

export function clientConfig(service: AwsService, endpoint?: string) {
  return {
    region: REGION,
    endpoint: endpointFor(service, endpoint),
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    // Path-style S3 addressing: emulators do not resolve bucket sub-domains.
    forcePathStyle: true,
    maxAttempts: 1,
  };
}

/**
 * DynamoDB runs each transaction in isolation; moto server does not (it checks conditions and
 * writes in whichever request thread gets there, and rolls a failed transaction back by
 * restoring a copy of the table). One connection makes the emulator take concurrent requests
 * one at a time, as DynamoDB's isolation would order them.
 */
export function serialisedClient(): DynamoDBClient {
  return new DynamoDBClient({
    ...clientConfig('dynamodb'),
    requestHandler: { httpAgent: new http.Agent({ keepAlive: true, maxSockets: 1 }) },
  });
}

export function awsClients(endpoint?: string) {
  return {
    dynamodb: new DynamoDBClient(clientConfig('dynamodb', endpoint)),
    sqs: new SQSClient(clientConfig('sqs', endpoint)),
    s3: new S3Client(clientConfig('s3', endpoint)),
    s3Presigning: new S3Client({ ...clientConfig('s3', endpoint), ...PRESIGNING_CONFIG }),
    ecs: new ECSClient(clientConfig('ecs', endpoint)),
  };
}

export interface AwsEnvironment {
  readonly tableName: string;
  readonly queueUrl: string;
  readonly deadLetterQueueUrl: string;
  readonly bucket: string;
  readonly cluster: string;
  readonly clients: ReturnType<typeof awsClients>;
  /** The FERRY_* settings a deployment would give its functions. */
  readonly env: Record<string, string>;
}

export async function createAwsEnvironment(endpoint?: string): Promise<AwsEnvironment> {
  const id = randomUUID().slice(0, 8);
  const clients = awsClients(endpoint);
  const tableName = `ferry-${id}`;
  const bucket = `ferry-results-${id}`;
  const cluster = `ferry-${id}`;
  await clients.dynamodb.send(new CreateTableCommand(tableDefinition(tableName)));
  const dlq = await clients.sqs.send(new CreateQueueCommand({ QueueName: `ferry-${id}-dlq` }));
  const dlqArn = (
    await clients.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: dlq.QueueUrl, AttributeNames: ['QueueArn'] }),
    )
  ).Attributes?.QueueArn;
  const queue = await clients.sqs.send(
    new CreateQueueCommand({
      QueueName: `ferry-${id}`,
      Attributes: {
        VisibilityTimeout: '60',
        RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 5 }),
      },
    }),
  );
  await clients.s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const created = await clients.ecs.send(
    new CreateClusterCommand({ clusterName: cluster, capacityProviders: ['FARGATE', 'FARGATE_SPOT'] }),
  );
  // The emulator's default VPC stands in for the network a deployment would create.
  const ec2 = new EC2Client(clientConfig('ec2', endpoint));
  const subnets = await ec2.send(
    new DescribeSubnetsCommand({ Filters: [{ Name: 'default-for-az', Values: ['true'] }] }),
  );
  const subnet = subnets.Subnets?.[0];
  const group = await ec2.send(
    new CreateSecurityGroupCommand({
      GroupName: `ferry-${id}`,
      Description: 'Ferry tasks',
      VpcId: subnet?.VpcId,
    }),
  );
  const env = {
    FERRY_TABLE_NAME: tableName,
    FERRY_QUEUE_URL: queue.QueueUrl ?? '',
    FERRY_BUCKET: bucket,
    FERRY_CLUSTER: created.cluster?.clusterArn ?? cluster,
    FERRY_SUBNETS: subnet?.SubnetId ?? '',
    FERRY_SECURITY_GROUPS: group.GroupId ?? '',
    FERRY_TASK_ROLE_ARN: 'arn:aws:iam::123456789012:role/ferry-task',
    FERRY_EXECUTION_ROLE_ARN: 'arn:aws:iam::123456789012:role/ferry-task-execution',
    FERRY_LOG_GROUP: `/ferry/${id}/tasks`,
    FERRY_RUNNER_IMAGE: '123456789012.dkr.ecr.us-east-1.amazonaws.com/ferry-runner:test',
    // Where tasks' publishers ask for upload links; tests that use the API give their own front.
    FERRY_API_URL: 'https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com',
    AWS_REGION: REGION,
  };
  return {
    tableName,
    queueUrl: queue.QueueUrl ?? '',
    deadLetterQueueUrl: dlq.QueueUrl ?? '',
    bucket,
    cluster: env.FERRY_CLUSTER,
    clients,
    env,
  };
}

export const awsConfig = (environment: AwsEnvironment, extra: Record<string, string> = {}) =>
  loadConfig({ ...environment.env, FERRY_LOG_LEVEL: 'error', ...extra });

/** What the publisher container does at the end of a run: the streams, then result.json last. */
export async function publishResult(
  aws: AwsEnvironment,
  id: string,
  stdout: string,
  exitCode = 0,
): Promise<void> {
  const limits = { storedBytes: 1024 * 1024, inlineBytes: 4096, keep: 'head+tail' as const };
  const captures = { stdout: new StreamCapture(limits), stderr: new StreamCapture(limits) };
  captures.stdout.write(Buffer.from(stdout));
  const now = new Date().toISOString();
  await storeResult(new S3ObjectStore(aws.bucket, aws.clients.s3), id, captures, limits.keep, {
    exitCode,
    signal: null,
    partial: false,
    startedAt: now,
    endedAt: now,
  });
}

/**
 * Submits `job` and has the dispatcher launch it on the emulator's ECS; returns the execution
 * and the environment RunTask's overrides gave its publisher (upload secret included).
 */
export async function launchOnEcs(
  aws: AwsEnvironment,
  core: Core,
  job: Record<string, unknown>,
): Promise<{ executionId: string; publisherEnvironment: Record<string, string> }> {
  const execution = await submitJob(core, 'arn:aws:iam::123456789012:user/alice', job);
  const outcome = await dispatch(core, { executionId: execution.id });
  if (outcome.outcome !== 'launched') throw new Error(`not launched: ${JSON.stringify(outcome)}`);
  const { tasks = [] } = await aws.clients.ecs.send(
    new DescribeTasksCommand({ cluster: aws.cluster, tasks: [outcome.taskId] }),
  );
  const publisher = tasks[0]?.overrides?.containerOverrides?.find((c) => c.name === 'ferry-publisher');
  return {
    executionId: execution.id,
    publisherEnvironment: Object.fromEntries((publisher?.environment ?? []).map((e) => [e.name, e.value])),
  };
}
