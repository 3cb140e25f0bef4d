// Ferry's Lambda function: one place that fixes how a handler of functions/aws-handlers.ts
// is bundled and run, and that pairs each FERRY_* setting with the narrowest grant the
// handler needs for it, so a setting never arrives without its permission or the reverse.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArnFormat, type Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import type { ICluster } from 'aws-cdk-lib/aws-ecs';
import { type IRole, PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { type ILogGroup, LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { INDEXES } from '#shared/adapters/aws/table.ts';
import { acknowledgeRules, acknowledgeWildcards } from './acknowledge.ts';

/** The repository root: the functions' entry, the lock file and the runner's build context live here. */
export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The exports of functions/aws-handlers.ts. */
export type FerryHandler = 'api' | 'dispatcher' | 'taskEvents' | 'sweeper';

/** Every variable the Lambda configuration accepts (shared/config.ts rejects any other FERRY_*). */
export type FerrySetting =
  | 'FERRY_TABLE_NAME'
  | 'FERRY_QUEUE_URL'
  | 'FERRY_BUCKET'
  | 'FERRY_CLUSTER'
  | 'FERRY_SUBNETS'
  | 'FERRY_SECURITY_GROUPS'
  | 'FERRY_TASK_ROLE_ARN'
  | 'FERRY_EXECUTION_ROLE_ARN'
  | 'FERRY_LOG_GROUP'
  | 'FERRY_RUNNER_IMAGE'
  | 'FERRY_API_URL'
  | 'FERRY_ASSIGN_PUBLIC_IP'
  | 'FERRY_NETWORK_ISOLATION'
  | 'FERRY_CAPACITY_PROVIDER'
  | 'FERRY_RETENTION_DAYS'
  | 'FERRY_MAX_CONCURRENCY'
  | 'FERRY_MAX_CPU'
  | 'FERRY_MAX_MEMORY'
  | 'FERRY_IMAGE_ALLOW'
  | 'FERRY_IMAGE_DENY'
  | 'FERRY_REGISTRY_ALLOW'
  | 'FERRY_PUBLISH_ALLOW'
  | 'FERRY_INPUT_ALLOW'
  | 'FERRY_MAX_TIMEOUT_SECONDS'
  | 'FERRY_ALLOW_EGRESS'
  | 'FERRY_LOG_LEVEL';

/** Settings that need no grant: policy and sizing, and the values the dispatcher hands to ECS. */
export type PlainSetting = Exclude<
  FerrySetting,
  | 'FERRY_TABLE_NAME'
  | 'FERRY_QUEUE_URL'
  | 'FERRY_BUCKET'
  | 'FERRY_CLUSTER'
  | 'FERRY_TASK_ROLE_ARN'
  | 'FERRY_EXECUTION_ROLE_ARN'
  | 'FERRY_API_URL'
>;

/** The ECS calls a handler may make, each granted on this cluster only. */
export type EcsTaskAction =
  | 'DescribeTaskDefinition'
  | 'RegisterTaskDefinition'
  | 'RunTask'
  | 'ListTasks'
  | 'DescribeTasks'
  | 'StopTask';

/** What a handler does with the results bucket; every key it touches is under `executions/`. */
export interface ResultsAccess {
  /** Key pattern it reads (GetObject; presigned links carry the same permission). */
  readonly read?: string;
  /** Lists `executions/…` (to delete or publish a whole result). */
  readonly list?: boolean;
  /** Deletes under `executions/` (a rejected result). */
  readonly delete?: boolean;
  /**
   * Signs upload links for tasks' publishers: PutObject (which covers the multipart calls) and
   * AbortMultipartUpload on exactly the keys a publisher writes. Deleting a live window is
   * covered by `delete`. A link can do no more than the role that signed it.
   */
  readonly signUploads?: boolean;
}

/** The keys a task's publisher writes (shared/domain/upload-links.ts signs no others). */
export const PUBLISHER_KEYS = [
  'executions/*/stdout',
  'executions/*/stderr',
  'executions/*/result.json',
  'executions/*/live/*',
  'executions/*/outputs/*',
] as const;

/**
 * Read access to where inputs come from: the deployment's own bucket under inputs/, and each
 * `s3://bucket/prefix` source (https sources need none). GetObject also answers HEAD; ListBucket
 * is held to the prefix, for DIRECTORY inputs.
 */
export function inputReadStatements(
  scope: Construct,
  ownBucket: IBucket,
  sources: readonly string[],
): PolicyStatement[] {
  const partition = Stack.of(scope).partition;
  const prefixes = [
    { objects: ownBucket.arnForObjects('inputs/*'), bucket: ownBucket.bucketArn, prefix: 'inputs/*' },
    ...sources.flatMap((source) => {
      if (!source.startsWith('s3://')) return [];
      const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(source);
      if (match === null) throw new Error(`inputSources: not an s3:// prefix: ${source}`);
      const [, bucket, key = ''] = match;
      // Whole path segments, as the bid matches them: s3://data/refs is refs/…, not refs-private.
      const prefix = key === '' ? '*' : `${key.replace(/\/+$/, '')}/*`;
      return [
        {
          objects: `arn:${partition}:s3:::${bucket}/${prefix}`,
          bucket: `arn:${partition}:s3:::${bucket}`,
          prefix,
        },
      ];
    }),
  ];
  return [
    new PolicyStatement({ actions: ['s3:GetObject'], resources: prefixes.map((p) => p.objects) }),
    ...prefixes.map(
      (p) =>
        new PolicyStatement({
          actions: ['s3:ListBucket'],
          resources: [p.bucket],
          conditions: { StringLike: { 's3:prefix': [p.prefix] } },
        }),
    ),
  ];
}

export interface FerryFunctionProps {
  /** Which export of functions/aws-handlers.ts the function runs. */
  readonly handler: FerryHandler;
  readonly description: string;
  readonly timeout: Duration;
  /** @default 512 */
  readonly memorySize?: number;
  readonly logRetention: RetentionDays;
  /** What happens to the function's log group when the stack is deleted. */
  readonly logRemovalPolicy?: RemovalPolicy;
}

const ENTRY = path.join(REPO_ROOT, 'functions', 'aws-handlers.ts');

export class FerryFunction extends NodejsFunction {
  /** Where the function writes its logs; created here so its retention is explicit. */
  readonly logs: ILogGroup;
  /** The function's own role: no managed policy, only what the `use…` methods grant. */
  readonly functionRole: Role;

  constructor(scope: Construct, id: string, props: FerryFunctionProps) {
    // Both live beside the function: they must exist before it does.
    const logs = new LogGroup(scope, `${id}Logs`, {
      retention: props.logRetention,
      removalPolicy: props.logRemovalPolicy ?? RemovalPolicy.RETAIN,
    });
    const role = new Role(scope, `${id}Role`, {
      assumedBy: new ServicePrincipal('lambda.amazonaws.com'),
      description: `Ferry ${props.handler} function`,
    });
    super(scope, id, {
      entry: ENTRY,
      handler: props.handler,
      projectRoot: REPO_ROOT,
      depsLockFilePath: path.join(REPO_ROOT, 'package-lock.json'),
      description: props.description,
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: props.memorySize ?? 512,
      timeout: props.timeout,
      role,
      logGroup: logs,
      environment: { NODE_OPTIONS: '--enable-source-maps' },
      bundling: {
        format: OutputFormat.ESM,
        target: 'node22',
        // ESM first, so dependencies tree-shake; CommonJS ones still get a require().
        mainFields: ['module', 'main'],
        banner:
          "import { createRequire as __ferryRequire } from 'node:module'; const require = __ferryRequire(import.meta.url);",
        minify: true,
        // Ferry errors take their name from their class (shared/errors.ts): keep class names.
        keepNames: true,
        sourceMap: true,
        sourcesContent: false,
        // The SDK version Ferry is tested with, not whichever one the runtime carries.
        bundleAwsSDK: true,
        externalModules: [],
        // esbuild from node_modules: synth needs neither Docker nor a network.
        forceDockerBundling: false,
      },
    });
    this.logs = logs;
    this.functionRole = role;
    this.allow(
      new PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [logs.logGroupArn],
      }),
    );
    acknowledgeRules(this, {
      'AwsSolutions-L1':
        'Node.js 22 on purpose: the same major as the runner image (node:22) and the one the SDK and tests run on; move both together.',
    });
  }

  /** FERRY_TABLE_NAME, with item reads and conditional writes on the table and queries on its indexes: no scans, no table administration. */
  useTable(table: ITable): this {
    this.setting('FERRY_TABLE_NAME', table.tableName);
    this.allow(
      new PolicyStatement({
        actions: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
        resources: [table.tableArn],
      }),
    );
    this.allow(
      new PolicyStatement({
        actions: ['dynamodb:Query'],
        resources: Object.values(INDEXES).map((index) => `${table.tableArn}/index/${index.name}`),
      }),
    );
    return this;
  }

  /**
   * FERRY_QUEUE_URL, with SendMessage when the handler queues (accepting a bid, deferring,
   * re-queueing). Receiving is granted by the dispatcher's event source, not here.
   */
  useQueue(queue: IQueue, access: { readonly send: boolean }): this {
    this.setting('FERRY_QUEUE_URL', queue.queueUrl);
    if (access.send)
      this.allow(new PolicyStatement({ actions: ['sqs:SendMessage'], resources: [queue.queueArn] }));
    return this;
  }

  /** FERRY_BUCKET, with only the object operations the handler makes on results. */
  useResults(bucket: IBucket, access: ResultsAccess): this {
    this.setting('FERRY_BUCKET', bucket.bucketName);
    const why =
      'Results are keyed executions/{id}/…, with ids minted at run time: the pattern names that prefix and nothing wider.';
    if (access.read !== undefined) {
      this.allow(
        new PolicyStatement({ actions: ['s3:GetObject'], resources: [bucket.arnForObjects(access.read)] }),
        why,
      );
    }
    if (access.delete === true) {
      this.allow(
        new PolicyStatement({
          actions: ['s3:DeleteObject'],
          resources: [bucket.arnForObjects('executions/*')],
        }),
        why,
      );
    }
    if (access.signUploads === true) {
      this.allow(
        new PolicyStatement({
          actions: ['s3:PutObject', 's3:AbortMultipartUpload'],
          resources: PUBLISHER_KEYS.map((key) => bucket.arnForObjects(key)),
        }),
        `${why} Upload links are signed for a publisher's own keys only: its streams, live windows, manifest and outputs.`,
      );
    }
    if (access.list === true) {
      this.allow(
        new PolicyStatement({
          actions: ['s3:ListBucket'],
          resources: [bucket.bucketArn],
          conditions: { StringLike: { 's3:prefix': ['executions/*'] } },
        }),
      );
    }
    return this;
  }

  /** Lets the api size inputs for a bid: read (HEAD, one listing page) where they may come from. */
  readInputs(bucket: IBucket, sources: readonly string[]): this {
    for (const statement of inputReadStatements(this, bucket, sources)) {
      this.allow(
        statement,
        'Inputs are chosen by each job under the prefixes the deployer allowed: the patterns name those prefixes and nothing wider.',
      );
    }
    return this;
  }

  /** Lets the api copy accepted results to these `s3://bucket/prefix` destinations (publish). */
  allowPublishTo(destinations: readonly string[]): this {
    if (destinations.length === 0) return this;
    const resources = destinations.map((destination) => {
      const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(destination);
      if (match === null) throw new Error(`not an s3:// destination: ${destination}`);
      const [, bucket, prefix] = match;
      return `arn:${Stack.of(this).partition}:s3:::${bucket}/${prefix ?? ''}*`;
    });
    this.allow(
      new PolicyStatement({ actions: ['s3:PutObject'], resources }),
      'Publish destinations are prefixes chosen by the deployer; each result lands under its own execution id.',
    );
    return this;
  }

  /**
   * FERRY_CLUSTER, with the ECS calls the handler makes, every one held to this cluster
   * (resource ARNs within it and the `ecs:cluster` condition key).
   */
  useCluster(cluster: ICluster, actions: readonly EcsTaskAction[]): this {
    this.setting('FERRY_CLUSTER', cluster.clusterName);
    const stack = Stack.of(this);
    const onCluster = { ArnEquals: { 'ecs:cluster': cluster.clusterArn } };
    const tasks = stack.formatArn({
      service: 'ecs',
      resource: 'task',
      resourceName: `${cluster.clusterName}/*`,
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
    });
    const has = (action: EcsTaskAction) => actions.includes(action);
    const definitions = (['DescribeTaskDefinition', 'RegisterTaskDefinition'] as const).filter(has);
    if (definitions.length > 0) {
      this.allow(
        new PolicyStatement({ actions: definitions.map((a) => `ecs:${a}`), resources: ['*'] }),
        'DescribeTaskDefinition and RegisterTaskDefinition support no resource-level permissions. What a registered definition may do is bounded by iam:PassRole, granted for the two task roles only.',
      );
    }
    if (has('RunTask')) {
      this.allow(
        new PolicyStatement({
          actions: ['ecs:RunTask'],
          resources: [
            stack.formatArn({
              service: 'ecs',
              resource: 'task-definition',
              resourceName: 'ferry-*:*',
              arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
            }),
          ],
          conditions: onCluster,
        }),
        'Ferry registers one task definition per image, family ferry-<hash>, at run time: only those families, any revision, and only on this cluster (ecs:cluster).',
      );
      // RunTask with tags (ferry:execution, labels) needs TagResource on the task it creates.
      this.allow(
        new PolicyStatement({
          actions: ['ecs:TagResource'],
          resources: [tasks],
          conditions: { StringEquals: { 'ecs:CreateAction': 'RunTask' } },
        }),
        'Tasks get their ids when RunTask creates them: tagging is allowed for tasks of this cluster, and only while RunTask creates them.',
      );
    }
    const onTasks = (['DescribeTasks', 'StopTask'] as const).filter(has);
    if (onTasks.length > 0) {
      this.allow(
        new PolicyStatement({
          actions: onTasks.map((a) => `ecs:${a}`),
          resources: [tasks],
          conditions: onCluster,
        }),
        'Task ids are minted by ECS at run time: any task of this cluster (its name in the ARN, and ecs:cluster), no other cluster.',
      );
    }
    if (has('ListTasks')) {
      this.allow(
        new PolicyStatement({ actions: ['ecs:ListTasks'], resources: ['*'], conditions: onCluster }),
        'ListTasks names no task resource for Fargate; the ecs:cluster condition holds it to this cluster.',
      );
    }
    return this;
  }

  /**
   * FERRY_TASK_ROLE_ARN and FERRY_EXECUTION_ROLE_ARN; with `pass`, iam:PassRole for these two
   * roles and only to ECS tasks (registering and running task definitions needs it).
   */
  useTaskRoles(
    roles: { readonly task: IRole; readonly execution: IRole },
    access: { readonly pass: boolean },
  ): this {
    this.setting('FERRY_TASK_ROLE_ARN', roles.task.roleArn);
    this.setting('FERRY_EXECUTION_ROLE_ARN', roles.execution.roleArn);
    if (access.pass) {
      this.allow(
        new PolicyStatement({
          actions: ['iam:PassRole'],
          resources: [roles.task.roleArn, roles.execution.roleArn],
          conditions: { StringEquals: { 'iam:PassedToService': 'ecs-tasks.amazonaws.com' } },
        }),
      );
    }
    return this;
  }

  /**
   * FERRY_API_URL, which the dispatcher hands to every task's publisher, with the one grant the
   * publisher needs to use it: execute-api:Invoke for the task role on the upload-links route
   * (`routeArn`), and on nothing else of the API.
   */
  useUploadLinks(api: { readonly url: string; readonly routeArn: string }, taskRole: IRole): this {
    this.setting('FERRY_API_URL', api.url);
    const invoke = new PolicyStatement({ actions: ['execute-api:Invoke'], resources: [api.routeArn] });
    taskRole.addToPrincipalPolicy(invoke);
    acknowledgeWildcards(
      taskRole,
      invoke,
      'The route takes the execution id in its path, known only at run time: POST /v1/executions/*/uploads of this API and stage, no other route.',
    );
    return this;
  }

  /** Settings that carry no permission: policy, sizing, and values handed on to ECS. */
  useSettings(settings: Partial<Record<PlainSetting, string>>): this {
    for (const [name, value] of Object.entries(settings) as [PlainSetting, string | undefined][]) {
      if (value !== undefined) this.setting(name, value);
    }
    return this;
  }

  private setting(name: FerrySetting, value: string): void {
    this.addEnvironment(name, value);
  }

  /** Adds the statement to this function's role; a statement with a wildcard must say why. */
  private allow(statement: PolicyStatement, whyWildcard?: string): void {
    this.functionRole.addToPrincipalPolicy(statement);
    if (whyWildcard !== undefined) acknowledgeWildcards(this.functionRole, statement, whyWildcard);
  }
}
