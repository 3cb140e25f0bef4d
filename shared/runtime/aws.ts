// The AWS runtime: builds Ferry's dependencies on DynamoDB, SQS, S3 and ECS from validated
// config, once per Lambda container (clients are reused on warm starts).
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ECSClient } from '@aws-sdk/client-ecs';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoNodeHistory } from '../adapters/aws/dynamo-history.ts';
import { DynamoCapacityLedger } from '../adapters/aws/dynamo-ledger.ts';
import { DynamoExecutionStore, DynamoIdempotencyStore } from '../adapters/aws/dynamo-store.ts';
import { EcsBackend } from '../adapters/aws/ecs-backend.ts';
import { S3ObjectStore } from '../adapters/aws/s3-object-store.ts';
import { SdkS3Source } from '../adapters/aws/s3-source.ts';
import { PRESIGNING_CONFIG, S3UploadSigner } from '../adapters/aws/s3-upload-signer.ts';
import { SqsJobQueue } from '../adapters/aws/sqs-queue.ts';
import { StoreThenSendIntake } from '../adapters/aws/store-then-send-intake.ts';
import { executionIds, systemClock } from '../adapters/system.ts';
import type { FerryConfig } from '../config.ts';
import type { ChangeFeed, Core } from '../core.ts';
import { fargateProfile } from '../domain/bidding.ts';
import { UPLOAD_LINK_SECONDS } from '../domain/upload-links.ts';
import { createLogger, type Logger } from '../logger.ts';
import { InputSources } from '../staging/inputs.ts';
import { FERRY_VERSION } from '../version.ts';

export interface AwsClients {
  readonly dynamodb?: DynamoDBClient;
  readonly sqs?: SQSClient;
  readonly s3?: S3Client;
  /** Signs upload links; it must be configured with PRESIGNING_CONFIG (see S3UploadSigner). */
  readonly s3Presigning?: S3Client;
  readonly ecs?: ECSClient;
}

/** Without push notifications from DynamoDB, a wait re-reads once a second. */
const pollingFeed: ChangeFeed = {
  waitForChange: (_id, timeoutMs) => new Promise((resolve) => setTimeout(resolve, Math.min(timeoutMs, 1000))),
};

export function buildAwsCore(config: FerryConfig, clients: AwsClients = {}, log?: Logger): Core {
  const aws = config.aws;
  if (aws === undefined) {
    throw new Error(
      'the AWS settings (FERRY_TABLE_NAME, FERRY_QUEUE_URL, FERRY_BUCKET, FERRY_CLUSTER, …) are not set',
    );
  }
  const logger = log ?? createLogger(config.logLevel, (line) => process.stdout.write(line));
  const dynamodb = clients.dynamodb ?? new DynamoDBClient({ region: aws.region });
  const store = new DynamoExecutionStore({
    tableName: aws.tableName,
    retentionDays: aws.retentionDays,
    client: dynamodb,
  });
  const queue = new SqsJobQueue(aws.queueUrl, clients.sqs ?? new SQSClient({ region: aws.region }));
  const s3 =
    clients.s3 ??
    new S3Client({
      region: aws.region,
      forcePathStyle: config.s3ForcePathStyle,
      // Input buckets (sized for bids) may be in another region than the deployment.
      followRegionRedirects: true,
    });
  return {
    store,
    history: new DynamoNodeHistory(aws.tableName, dynamodb),
    idempotency: new DynamoIdempotencyStore(aws.tableName, dynamodb),
    queue,
    intake: new StoreThenSendIntake(store, queue),
    objects: new S3ObjectStore(aws.bucket, s3),
    // Bids look up the sizes of inputs (the api function's read grant on the allowed prefixes).
    inputs: new InputSources({ s3: new SdkS3Source(s3) }),
    uploads: new S3UploadSigner(
      aws.bucket,
      clients.s3Presigning ?? new S3Client({ region: aws.region, ...PRESIGNING_CONFIG }),
    ),
    backend: new EcsBackend({
      cluster: aws.cluster,
      runnerImage: aws.runnerImage,
      bucket: aws.bucket,
      ...(aws.apiUrl === undefined ? {} : { apiUrl: aws.apiUrl }),
      subnets: aws.subnets,
      securityGroups: aws.securityGroups,
      assignPublicIp: aws.assignPublicIp,
      executionRoleArn: aws.executionRoleArn,
      taskRoleArn: aws.taskRoleArn,
      logGroup: aws.logGroup,
      region: aws.region,
      capacityProvider: aws.capacityProvider,
      s3ForcePathStyle: config.s3ForcePathStyle,
      client: clients.ecs ?? new ECSClient({ region: aws.region }),
      log: logger,
    }),
    ledger: new DynamoCapacityLedger(aws.tableName, dynamodb),
    changes: pollingFeed,
    clock: systemClock,
    ids: executionIds(),
    log: logger,
    settings: {
      policy: config.policy,
      profile: fargateProfile(aws.networkIsolation === 'isolated'),
      capacity: config.capacity,
      bidTtlSeconds: config.policy.bidTtlSeconds,
      deferSeconds: 10,
      maxLaunchAttempts: 10,
      resultLinkSeconds: config.resultLinkSeconds,
      uploadLinkSeconds: UPLOAD_LINK_SECONDS,
      // API Gateway ends a request after 29 s.
      maxWaitSeconds: 25,
      launchGraceSeconds: 600,
      requeueAfterSeconds: 900,
      version: FERRY_VERSION,
    },
  };
}
