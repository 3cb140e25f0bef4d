// FerryExecutor: the whole executor as one construct — HTTP API with IAM auth, the four
// functions, queue and dead letters, table, results bucket, Fargate cluster, runner image,
// task roles, the task-event rule and the sweeper schedule. Free when idle by default: no
// NAT gateway, load balancer or interface endpoint unless the isolated network is chosen.
import { Duration, Fn, IgnoreMode, RemovalPolicy, Stack, Token } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import { HttpApi, HttpMethod, type HttpStage, LogGroupLogDestination } from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import { Alarm, ComparisonOperator, type IAlarmAction, TreatMissingData } from 'aws-cdk-lib/aws-cloudwatch';
import { AttributeType, BillingMode, ProjectionType, Table } from 'aws-cdk-lib/aws-dynamodb';
import {
  FlowLogDestination,
  FlowLogTrafficType,
  GatewayVpcEndpointAwsService,
  InterfaceVpcEndpointAwsService,
  IpAddresses,
  type ISecurityGroup,
  type IVpc,
  Peer,
  Port,
  SecurityGroup,
  type SubnetSelection,
  SubnetType,
  Vpc,
} from 'aws-cdk-lib/aws-ec2';
import type { IRepository } from 'aws-cdk-lib/aws-ecr';
import { DockerImageAsset, Platform } from 'aws-cdk-lib/aws-ecr-assets';
import { Cluster, ContainerInsights } from 'aws-cdk-lib/aws-ecs';
import { Rule, Schedule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import { type IGrantable, PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import {
  BlockPublicAccess,
  Bucket,
  BucketEncryption,
  type IBucket,
  ObjectOwnership,
} from 'aws-cdk-lib/aws-s3';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { AwsCustomResource, AwsCustomResourcePolicy, PhysicalResourceId } from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';
import { INDEXES, TABLE_KEY, TTL_ATTRIBUTE } from '#shared/adapters/aws/table.ts';
import { loadConfig } from '#shared/config.ts';
import { acknowledgeRules, acknowledgeWildcards } from './acknowledge.ts';
import {
  FerryFunction,
  type FerryHandler,
  inputReadStatements,
  type PlainSetting,
  REPO_ROOT,
} from './ferry-function.ts';

/** Where Fargate tasks run. */
export type FerryNetwork =
  /**
   * The default, free when idle: a VPC with public subnets only, tasks get a public IP and
   * reach ECR, S3, CloudWatch Logs and (for `network: egress` jobs) the internet through the
   * internet gateway. No NAT gateway, no endpoints. A job's `network: none` is NOT enforced
   * by the network in this layout (see the README).
   */
  | { readonly layout: 'public-subnets'; readonly maxAzs?: number }
  /**
   * Isolated subnets (no route to the internet), an S3 gateway endpoint (free) and interface
   * endpoints for ECR (api, dkr) and CloudWatch Logs (billed per hour per AZ), with a task
   * security group that can reach only those. Job images must come from ECR in the same
   * region; `network: egress` is declined.
   */
  | { readonly layout: 'isolated-subnets'; readonly maxAzs?: number }
  /** Subnets of a VPC you already have (for instance private subnets behind your NAT). */
  | {
      readonly layout: 'existing-vpc';
      readonly vpc: IVpc;
      readonly subnets: SubnetSelection;
      /** Public subnets need it to reach ECR and S3; private ones with a NAT do not. */
      readonly assignPublicIp: boolean;
      /** Whether these subnets reach the internet, so `network: egress` jobs can be accepted. */
      readonly internetEgress: boolean;
    };

export interface FerryJobLimits {
  /** The longest timeout a job may ask for. @default 24 hours */
  readonly maxTimeout?: Duration;
  /**
   * Whether jobs may ask for `network: egress`.
   * @default true, except on isolated subnets where it cannot be honoured
   */
  readonly allowEgress?: boolean;
}

/** What all running jobs together may use: keep it within the account's Fargate quota. */
export interface FerryCapacityBudget {
  /** @default 50 */
  readonly maxConcurrentJobs?: number;
  /** @default 64 */
  readonly maxVcpus?: number;
  /** @default 262144 (256 GiB) */
  readonly maxMemoryMiB?: number;
  /** @default 'FARGATE' */
  readonly capacityProvider?: 'FARGATE' | 'FARGATE_SPOT';
}

export interface FerryImagePolicy {
  /** Image patterns jobs may use (`*` matches anything). @default ['*'] */
  readonly allow?: readonly string[];
  /** Image patterns refused even when allowed. @default none */
  readonly deny?: readonly string[];
  /**
   * Registry hosts images may be pulled from, checked on top of `allow` (`*` matches any
   * public host; private and loopback addresses only when named exactly).
   * @default Docker Hub, public.ecr.aws and this account's ECR registries
   */
  readonly registries?: readonly string[];
  /**
   * Private ECR repositories job images come from: the task execution role may pull from
   * these. Public registries need no grant; other private registries are not supported.
   */
  readonly ecrRepositories?: readonly IRepository[];
}

export interface FerryExecutorProps {
  readonly jobLimits?: FerryJobLimits;
  readonly capacity?: FerryCapacityBudget;
  readonly images?: FerryImagePolicy;
  /** How long results (S3) and finished execution records (DynamoDB TTL) are kept. @default 30 days */
  readonly resultRetention?: Duration;
  /** @default { layout: 'public-subnets' } */
  readonly network?: FerryNetwork;
  /** Retention of the functions', tasks', API's and flow logs. @default one month */
  readonly logRetention?: RetentionDays;
  /**
   * What `cdk destroy` does with the table, the results bucket and the log groups.
   * @default RETAIN (with DynamoDB deletion protection on)
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Where jobs' inputs may come from besides the deployment's own `s3://BUCKET/inputs/`:
   * `s3://bucket/prefix/` (the api, to size inputs for a bid, and the tasks, to fetch them,
   * may then read there) or `https://host/path/` (not on isolated subnets). @default none
   */
  readonly inputSources?: readonly string[];
  /** `s3://bucket/prefix` destinations that accepted results may be published to. @default none */
  readonly publishDestinations?: readonly string[];
  /** Steady-state requests per second and burst for the whole API. @default 50 and 100 */
  readonly apiThrottle?: { readonly rateLimit: number; readonly burstLimit: number };
  /** Where the dead-letter alarms go (an SNS topic action, for example). @default none */
  readonly alarmActions?: readonly IAlarmAction[];
  /**
   * How many dispatchers may run at once (the SQS event source's maximum concurrency, 2–1000).
   * Every launch reserves from one ledger item: more dispatchers than a few only contend on it.
   * @default 3
   */
  readonly dispatcherConcurrency?: number;
  /** A bucket for the results bucket's server access logs. @default none */
  readonly accessLogsBucket?: IBucket;
  /** CloudWatch Container Insights on the cluster (billed per metric). @default false */
  readonly containerInsights?: boolean;
  /** @default 'info' */
  readonly logLevel?: 'debug' | 'info' | 'warn' | 'error';
}

/** The runner's build context is the repository root; only what runner/Dockerfile copies goes in. */
const RUNNER_CONTEXT = [
  '*',
  '!package.json',
  '!package-lock.json',
  '!tsconfig.json',
  '!shared',
  '!runner',
  '!scripts/bundle-publisher.mjs',
];

const MAX_RECEIVES = 5;

/** The address range of the VPC Ferry creates (public or isolated). */
const VPC_CIDR = '10.0.0.0/16';

export class FerryExecutor extends Construct {
  readonly api: HttpApi;
  readonly stage: HttpStage;
  /** The API's base URL; callers sign requests to it with SigV4 (service `execute-api`). */
  readonly url: string;
  readonly table: Table;
  readonly resultsBucket: Bucket;
  readonly queue: Queue;
  readonly deadLetterQueue: Queue;
  readonly deadLetterAlarm: Alarm;
  /** Task state change events EventBridge could not deliver to the task-events function. */
  readonly taskEventDeadLetterQueue: Queue;
  readonly taskEventDeadLetterAlarm: Alarm;
  readonly cluster: Cluster;
  readonly vpc: IVpc;
  readonly taskSecurityGroup: ISecurityGroup;
  readonly taskRole: Role;
  readonly taskExecutionRole: Role;
  readonly taskLogs: LogGroup;
  readonly runnerImage: DockerImageAsset;
  readonly functions: {
    readonly api: FerryFunction;
    readonly dispatcher: FerryFunction;
    readonly taskEvents: FerryFunction;
    readonly sweeper: FerryFunction;
  };

  constructor(scope: Construct, id: string, props: FerryExecutorProps = {}) {
    super(scope, id);
    const stack = Stack.of(this);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const logRetention = props.logRetention ?? RetentionDays.ONE_MONTH;
    const retention = props.resultRetention ?? Duration.days(30);
    const logs = (logId: string) => new LogGroup(this, logId, { retention: logRetention, removalPolicy });

    // --- network
    const network = this.buildNetwork(props.network ?? { layout: 'public-subnets' }, logs);
    this.vpc = network.vpc;
    this.taskSecurityGroup = network.securityGroup;
    const allowEgress = props.jobLimits?.allowEgress ?? network.internetEgress;
    if (allowEgress && !network.internetEgress) {
      throw new Error('jobLimits.allowEgress: this network layout gives tasks no route to the internet');
    }

    // --- state: executions, idempotency keys and the capacity ledger
    this.table = new Table(this, 'Table', {
      partitionKey: { name: TABLE_KEY, type: AttributeType.STRING },
      billingMode: BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      timeToLiveAttribute: TTL_ATTRIBUTE,
      deletionProtection: removalPolicy === RemovalPolicy.RETAIN,
      removalPolicy,
    });
    for (const index of Object.values(INDEXES)) {
      this.table.addGlobalSecondaryIndex({
        indexName: index.name,
        partitionKey: { name: index.partitionKey, type: AttributeType.STRING },
        sortKey: { name: index.sortKey, type: AttributeType.STRING },
        projectionType: index.projection === 'ALL' ? ProjectionType.ALL : ProjectionType.KEYS_ONLY,
      });
    }

    this.resultsBucket = new Bucket(this, 'Results', {
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      encryption: BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      lifecycleRules: [
        { id: 'expire-results', prefix: 'executions/', expiration: retention },
        { id: 'abort-incomplete-uploads', abortIncompleteMultipartUploadAfter: Duration.days(1) },
      ],
      removalPolicy,
      autoDeleteObjects: removalPolicy === RemovalPolicy.DESTROY,
      ...(props.accessLogsBucket === undefined
        ? {}
        : { serverAccessLogsBucket: props.accessLogsBucket, serverAccessLogsPrefix: 'ferry-results/' }),
    });
    if (props.accessLogsBucket === undefined) {
      acknowledgeRules(this.resultsBucket, {
        'AwsSolutions-S1':
          'Server access logs are opt-in (accessLogsBucket): a log bucket costs storage even when idle. Reads go through the API (access-logged with the caller) or links it presigned; writes come only through links the API signs for a task’s publisher (or, without a route to the API, from the task role).',
      });
    }

    // --- dispatch queue; messages that fail MAX_RECEIVES times are set aside and alarm
    const dispatcherTimeout = Duration.seconds(90);
    this.deadLetterQueue = new Queue(this, 'DeadLetters', {
      retentionPeriod: Duration.days(14),
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    this.queue = new Queue(this, 'Dispatch', {
      // Six times the dispatcher's timeout, as AWS advises for an SQS event source: a message
      // is never redelivered while still handled, nor while Lambda retries a throttled batch.
      visibilityTimeout: Duration.seconds(dispatcherTimeout.toSeconds() * 6),
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: MAX_RECEIVES },
    });
    this.deadLetterAlarm = this.alarmOnDeadLetters(
      'DeadLetterAlarm',
      this.deadLetterQueue,
      `Dispatch messages failed ${MAX_RECEIVES} times and were set aside in the dead-letter queue: read the dispatcher's log, fix, then redrive.`,
      props.alarmActions,
    );

    // --- compute: the cluster, the runner image, the task's roles and log group
    this.cluster = new Cluster(this, 'Cluster', {
      vpc: this.vpc,
      enableFargateCapacityProviders: true,
      containerInsightsV2: props.containerInsights ? ContainerInsights.ENABLED : ContainerInsights.DISABLED,
    });
    if (!props.containerInsights) {
      acknowledgeRules(this.cluster, {
        'AwsSolutions-ECS4':
          'Container Insights is opt-in (containerInsights): it bills per metric. Each job already reports its state, exit code and output through Ferry, and its containers log to CloudWatch Logs.',
      });
    }

    this.runnerImage = new DockerImageAsset(this, 'RunnerImage', {
      directory: REPO_ROOT,
      file: 'runner/Dockerfile',
      // Task definitions ask for X86_64 (shared/adapters/aws/ecs-backend.ts).
      platform: Platform.LINUX_AMD64,
      ignoreMode: IgnoreMode.DOCKER,
      exclude: RUNNER_CONTEXT,
      displayName: 'Ferry runner (wrapper and publisher)',
    });
    this.taskLogs = logs('TaskLogs');

    this.taskExecutionRole = new Role(this, 'TaskExecutionRole', {
      assumedBy: new ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'Ferry tasks: pull images, write container logs',
    });
    const pullFrom = [this.runnerImage.repository, ...(props.images?.ecrRepositories ?? [])];
    this.taskExecutionRole.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['ecr:BatchCheckLayerAvailability', 'ecr:GetDownloadUrlForLayer', 'ecr:BatchGetImage'],
        resources: pullFrom.map((repository) => repository.repositoryArn),
      }),
    );
    const ecrToken = new PolicyStatement({ actions: ['ecr:GetAuthorizationToken'], resources: ['*'] });
    this.taskExecutionRole.addToPrincipalPolicy(ecrToken);
    acknowledgeWildcards(
      this.taskExecutionRole,
      ecrToken,
      'ecr:GetAuthorizationToken has no resource-level permissions; which images can be pulled is limited by the repository statement.',
    );
    this.taskExecutionRole.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [this.taskLogs.logGroupArn],
      }),
    );

    // The task's role. Every container of a task can reach the task's credentials, the job's
    // included, so it may only read where inputs may come from: the publisher stores its result through
    // upload links the API signs for the holder of the launch's upload secret, and the role may
    // call only that route (granted with the dispatcher's FERRY_API_URL below). Tasks that
    // cannot reach the API (no route to the internet) write results themselves instead: the
    // role may then write, never read or list, under executions/ (see the README).
    this.taskRole = new Role(this, 'TaskRole', {
      assumedBy: new ServicePrincipal('ecs-tasks.amazonaws.com').withConditions({
        ArnLike: { 'aws:SourceArn': stack.formatArn({ service: 'ecs', resource: '*' }) },
        StringEquals: { 'aws:SourceAccount': stack.account },
      }),
      description: network.internetEgress
        ? "Ferry tasks: the publisher asks Ferry's API for links to store its execution's result"
        : 'Ferry tasks: the publisher stores stdout, stderr, result.json and the live window',
    });
    // Inputs: the stage container fetches them as the task role, which may read only where
    // inputs may come from (every container of the task can, the job's included).
    const inputSources = props.inputSources ?? [];
    const unreachable = inputSources.filter((source) => !source.startsWith('s3://'));
    if (unreachable.length > 0 && !network.internetEgress) {
      throw new Error(
        `inputSources: ${unreachable.join(', ')}: this network layout gives tasks no route to the internet, only to S3`,
      );
    }
    for (const statement of inputReadStatements(this, this.resultsBucket, inputSources)) {
      this.taskRole.addToPrincipalPolicy(statement);
      acknowledgeWildcards(
        this.taskRole,
        statement,
        'Inputs are chosen by each job under the prefixes the deployer allowed: the patterns name those prefixes and nothing wider.',
      );
    }
    const uploadLinks = network.internetEgress;
    if (!uploadLinks) {
      const resultWrites = new PolicyStatement({
        actions: ['s3:PutObject', 's3:AbortMultipartUpload'],
        resources: [this.resultsBucket.arnForObjects('executions/*')],
      });
      const liveDeletes = new PolicyStatement({
        actions: ['s3:DeleteObject'],
        resources: [this.resultsBucket.arnForObjects('executions/*/live/*')],
      });
      for (const statement of [resultWrites, liveDeletes]) {
        this.taskRole.addToPrincipalPolicy(statement);
        acknowledgeWildcards(
          this.taskRole,
          statement,
          'The execution id is known only when the task runs: writes are held to executions/*, deletes to the live windows under it.',
        );
      }
    }

    // --- the functions: the same settings for all, each with only its own grants
    const settings: Partial<Record<PlainSetting, string>> = {
      ...this.policySettings(props, retention, allowEgress),
      FERRY_SUBNETS: Fn.join(',', network.subnetIds),
      FERRY_SECURITY_GROUPS: network.securityGroup.securityGroupId,
      FERRY_ASSIGN_PUBLIC_IP: String(network.assignPublicIp),
      // Bids say so when a job's network "none" cannot be held by the network itself.
      FERRY_NETWORK_ISOLATION: network.internetEgress ? 'open' : 'isolated',
      FERRY_LOG_GROUP: this.taskLogs.logGroupName,
      FERRY_RUNNER_IMAGE: this.runnerImage.imageUri,
    };
    const roles = { task: this.taskRole, execution: this.taskExecutionRole };
    const ferryFunction = (
      functionId: string,
      handler: FerryHandler,
      description: string,
      timeout: Duration,
      memorySize: number,
    ) =>
      new FerryFunction(this, functionId, {
        handler,
        description,
        timeout,
        memorySize,
        logRetention,
        logRemovalPolicy: removalPolicy,
      })
        .useTable(this.table)
        .useSettings(settings);

    const api = ferryFunction('ApiFunction', 'api', 'Ferry HTTP API', Duration.seconds(30), 512)
      .useQueue(this.queue, { send: true })
      .useResults(this.resultsBucket, {
        read: 'executions/*',
        list: true,
        delete: true,
        signUploads: uploadLinks,
      })
      .useCluster(this.cluster, ['StopTask'])
      .useTaskRoles(roles, { pass: false })
      .readInputs(this.resultsBucket, inputSources)
      .allowPublishTo(props.publishDestinations ?? []);
    const dispatcher = ferryFunction(
      'DispatcherFunction',
      'dispatcher',
      'Ferry dispatcher: launches queued jobs on Fargate',
      dispatcherTimeout,
      512,
    )
      .useQueue(this.queue, { send: true })
      .useResults(this.resultsBucket, {})
      .useCluster(this.cluster, [
        'DescribeTaskDefinition',
        'RegisterTaskDefinition',
        'RunTask',
        'ListTasks',
        'DescribeTasks',
        'StopTask',
      ])
      .useTaskRoles(roles, { pass: true });
    const taskEvents = ferryFunction(
      'TaskEventsFunction',
      'taskEvents',
      "Ferry task events: ECS task state changes of Ferry's cluster",
      Duration.seconds(30),
      256,
    )
      .useQueue(this.queue, { send: false })
      // ListBucket so that a result never stored reads as missing (404), not as denied (403).
      .useResults(this.resultsBucket, { read: 'executions/*/result.json', list: true })
      .useCluster(this.cluster, [])
      .useTaskRoles(roles, { pass: false });
    const sweeper = ferryFunction(
      'SweeperFunction',
      'sweeper',
      'Ferry sweeper: deadlines, expired bids, lost tasks',
      Duration.seconds(60),
      256,
    )
      .useQueue(this.queue, { send: true })
      // Ending a lost task reads its result, as its stop event would have.
      .useResults(this.resultsBucket, { read: 'executions/*/result.json', list: true })
      .useCluster(this.cluster, ['DescribeTasks', 'StopTask'])
      .useTaskRoles(roles, { pass: false });
    this.functions = { api, dispatcher, taskEvents, sweeper };

    const dispatcherConcurrency = props.dispatcherConcurrency ?? 3;
    if (
      !Number.isInteger(dispatcherConcurrency) ||
      dispatcherConcurrency < 2 ||
      dispatcherConcurrency > 1000
    ) {
      throw new Error(
        `dispatcherConcurrency must be a whole number from 2 to 1000, not ${dispatcherConcurrency}`,
      );
    }
    dispatcher.addEventSource(
      new SqsEventSource(this.queue, {
        batchSize: 5,
        reportBatchItemFailures: true,
        // A burst waits in the queue rather than contending on the ledger item and dead-lettering.
        maxConcurrency: dispatcherConcurrency,
      }),
    );

    // Events EventBridge still cannot deliver after its retries are kept, and alarm: a lost
    // STOPPED event is found by the sweeper, but repeated losses mean the function is failing.
    this.taskEventDeadLetterQueue = new Queue(this, 'TaskEventDeadLetters', {
      retentionPeriod: Duration.days(14),
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    acknowledgeRules(this.taskEventDeadLetterQueue, {
      'AwsSolutions-SQS3':
        "It is a dead-letter queue: EventBridge's, for the task state change rule's target (DeadLetterConfig), not an SQS redrive, which is what the rule looks for.",
    });
    this.taskEventDeadLetterAlarm = this.alarmOnDeadLetters(
      'TaskEventDeadLetterAlarm',
      this.taskEventDeadLetterQueue,
      'Task state change events could not be delivered to the task-events function and were set aside: read its log, fix, then replay them.',
      props.alarmActions,
    );

    new Rule(this, 'TaskStateChanges', {
      description: "ECS task state changes of Ferry's cluster, to the task-events function",
      eventPattern: {
        source: ['aws.ecs'],
        detailType: ['ECS Task State Change'],
        detail: { clusterArn: [this.cluster.clusterArn] },
      },
      // The sweeper reconciles tasks whose events never arrive.
      targets: [
        new LambdaFunction(taskEvents, {
          retryAttempts: 8,
          maxEventAge: Duration.hours(2),
          deadLetterQueue: this.taskEventDeadLetterQueue,
        }),
      ],
    });
    new Rule(this, 'SweepSchedule', {
      description: 'Runs the Ferry sweeper every minute',
      schedule: Schedule.rate(Duration.minutes(1)),
      // A missed sweep is made up by the next one a minute later: no retries, no pile-up.
      targets: [new LambdaFunction(sweeper, { retryAttempts: 0 })],
    });
    sweeper.configureAsyncInvoke({ retryAttempts: 0, maxEventAge: Duration.minutes(1) });

    // --- the HTTP API: IAM authorization on every route; the caller's ARN is the owner
    this.api = new HttpApi(this, 'Api', {
      description: 'Ferry: bid on, run and collect container jobs',
      defaultAuthorizer: new HttpIamAuthorizer(),
      createDefaultStage: false,
    });
    this.api.addRoutes({
      path: '/{proxy+}',
      methods: [HttpMethod.ANY],
      integration: new HttpLambdaIntegration('ApiIntegration', api),
    });
    const accessLogs = logs('ApiAccessLogs');
    this.stage = this.api.addStage('DefaultStage', {
      stageName: '$default',
      autoDeploy: true,
      throttle: props.apiThrottle ?? { rateLimit: 50, burstLimit: 100 },
      accessLogSettings: {
        destination: new LogGroupLogDestination(accessLogs),
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            time: '$context.requestTime',
            caller: '$context.identity.userArn',
            sourceIp: '$context.identity.sourceIp',
            method: '$context.httpMethod',
            path: '$context.path',
            status: '$context.status',
            latencyMs: '$context.responseLatency',
            bytes: '$context.responseLength',
            error: '$context.error.message',
            integrationError: '$context.integrationErrorMessage',
          }),
        ),
      },
    });
    // The stage URL without its trailing slash: FERRY_URL as the CLI expects it.
    this.url = `https://${this.api.apiId}.execute-api.${stack.region}.${stack.urlSuffix}`;
    if (uploadLinks) {
      // Not on the api function itself: its environment cannot name the API that invokes it.
      dispatcher.useUploadLinks(
        {
          url: this.url,
          routeArn: stack.formatArn({
            service: 'execute-api',
            resource: this.api.apiId,
            resourceName: `${this.stage.stageName}/POST/v1/executions/*/uploads`,
          }),
        },
        this.taskRole,
      );
    }
  }

  /** Lets `grantee` call the API (execute-api:Invoke on every route). */
  grantInvoke(grantee: IGrantable) {
    const stack = Stack.of(this);
    const statement = new PolicyStatement({
      actions: ['execute-api:Invoke'],
      resources: [stack.formatArn({ service: 'execute-api', resource: this.api.apiId, resourceName: '*' })],
    });
    return grantee.grantPrincipal.addToPrincipalPolicy(statement);
  }

  /** The policy settings, validated now by the schema the functions apply at cold start. */
  /** An alarm as soon as one message lies in a dead-letter queue: each is work that did not happen. */
  private alarmOnDeadLetters(
    id: string,
    queue: Queue,
    description: string,
    actions: readonly IAlarmAction[] = [],
  ): Alarm {
    const alarm = new Alarm(this, id, {
      alarmDescription: description,
      metric: queue.metricApproximateNumberOfMessagesVisible({
        period: Duration.minutes(5),
        statistic: 'Maximum',
      }),
      threshold: 1,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    });
    for (const action of actions) alarm.addAlarmAction(action);
    return alarm;
  }

  private policySettings(
    props: FerryExecutorProps,
    retention: Duration,
    allowEgress: boolean,
  ): Partial<Record<PlainSetting, string>> {
    const list = (patterns: readonly string[] | undefined, what: string) => {
      if (patterns === undefined) return undefined;
      for (const pattern of patterns) {
        if (pattern.includes(',') || pattern.trim() === '')
          throw new Error(`${what}: not an image pattern: "${pattern}"`);
      }
      return patterns.join(',');
    };
    const text = (value: number | undefined) => (value === undefined ? undefined : String(value));
    const settings: Partial<Record<PlainSetting, string>> = {
      FERRY_CAPACITY_PROVIDER: props.capacity?.capacityProvider ?? 'FARGATE',
      FERRY_RETENTION_DAYS: String(retention.toDays()),
      FERRY_ALLOW_EGRESS: String(allowEgress),
      FERRY_MAX_CONCURRENCY: text(props.capacity?.maxConcurrentJobs),
      FERRY_MAX_CPU: text(props.capacity?.maxVcpus),
      FERRY_MAX_MEMORY: text(props.capacity?.maxMemoryMiB),
      FERRY_IMAGE_ALLOW: list(props.images?.allow, 'images.allow'),
      FERRY_IMAGE_DENY: list(props.images?.deny, 'images.deny'),
      FERRY_REGISTRY_ALLOW: list(props.images?.registries, 'images.registries'),
      // Bids decline any other destination, so no job asks for a copy the api may not make.
      FERRY_PUBLISH_ALLOW: props.publishDestinations?.length
        ? props.publishDestinations.map((d) => `${d.replace(/\*$/, '')}*`).join(',')
        : undefined,
      FERRY_MAX_TIMEOUT_SECONDS: text(props.jobLimits?.maxTimeout?.toSeconds()),
      // Beside the deployment's own inputs/, which is always allowed.
      FERRY_INPUT_ALLOW: props.inputSources?.length ? props.inputSources.join(',') : undefined,
      FERRY_LOG_LEVEL: props.logLevel,
    };
    const defined = Object.fromEntries(Object.entries(settings).filter(([, value]) => value !== undefined));
    for (const [name, value] of Object.entries(defined)) {
      if (Token.isUnresolved(value)) throw new Error(`${name} must be known at synth time`);
    }
    // Throws, naming each bad setting, exactly as a cold start would.
    loadConfig(defined);
    return defined;
  }

  private buildNetwork(network: FerryNetwork, logs: (id: string) => LogGroup) {
    if (network.layout === 'existing-vpc') {
      const securityGroup = new SecurityGroup(this, 'TaskSecurityGroup', {
        vpc: network.vpc,
        description: 'Ferry tasks: no inbound; outbound for image pulls, S3, logs and egress jobs',
        allowAllOutbound: true,
      });
      return {
        vpc: network.vpc,
        subnetIds: network.vpc.selectSubnets(network.subnets).subnetIds,
        securityGroup,
        assignPublicIp: network.assignPublicIp,
        internetEgress: network.internetEgress,
      };
    }
    const isolated = network.layout === 'isolated-subnets';
    const vpc = new Vpc(this, 'Vpc', {
      ipAddresses: IpAddresses.cidr(VPC_CIDR),
      maxAzs: network.maxAzs ?? 2,
      natGateways: 0,
      subnetConfiguration: [
        {
          name: 'jobs',
          subnetType: isolated ? SubnetType.PRIVATE_ISOLATED : SubnetType.PUBLIC,
          cidrMask: 20,
          // Tasks ask for a public IP themselves (assignPublicIp); nothing else lives here.
          ...(isolated ? {} : { mapPublicIpOnLaunch: false }),
        },
      ],
      restrictDefaultSecurityGroup: true,
      flowLogs: {
        all: {
          destination: FlowLogDestination.toCloudWatchLogs(logs('FlowLogs')),
          trafficType: FlowLogTrafficType.ALL,
        },
      },
    });
    const subnetIds = vpc.selectSubnets({ subnetGroupName: 'jobs' }).subnetIds;
    if (!isolated) {
      const securityGroup = new SecurityGroup(this, 'TaskSecurityGroup', {
        vpc,
        description: 'Ferry tasks: no inbound; outbound for image pulls, S3, logs and egress jobs',
        allowAllOutbound: true,
      });
      return { vpc, subnetIds, securityGroup, assignPublicIp: true, internetEgress: true };
    }

    const securityGroup = new SecurityGroup(this, 'TaskSecurityGroup', {
      vpc,
      description: 'Ferry tasks: no inbound; HTTPS to the VPC endpoints and S3 only',
      allowAllOutbound: false,
    });
    const endpointGroup = new SecurityGroup(this, 'EndpointSecurityGroup', {
      vpc,
      description: 'Ferry VPC endpoints: HTTPS from Ferry tasks',
      allowAllOutbound: false,
    });
    endpointGroup.addIngressRule(securityGroup, Port.tcp(443), 'HTTPS from Ferry tasks');
    // Inline (a literal CIDR, not a token), so the group's own egress list is never empty:
    // an empty list would leave EC2's default allow-all rule in place.
    securityGroup.addEgressRule(
      Peer.ipv4(VPC_CIDR),
      Port.tcp(443),
      'HTTPS to the ECR and CloudWatch Logs endpoints in this VPC',
    );
    vpc.addGatewayEndpoint('S3Endpoint', {
      service: GatewayVpcEndpointAwsService.S3,
      subnets: [{ subnetGroupName: 'jobs' }],
    });
    const endpoints = {
      EcrApiEndpoint: InterfaceVpcEndpointAwsService.ECR,
      EcrDockerEndpoint: InterfaceVpcEndpointAwsService.ECR_DOCKER,
      LogsEndpoint: InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    };
    for (const [endpointId, service] of Object.entries(endpoints)) {
      vpc.addInterfaceEndpoint(endpointId, {
        service,
        privateDnsEnabled: true,
        securityGroups: [endpointGroup],
        open: false,
        subnets: { subnetGroupName: 'jobs' },
      });
    }
    // S3 (image layers, results) is reached through the gateway endpoint's route; the
    // security group can name it only by its managed prefix list, whose id is per region.
    // Its own role and log group, so no managed policy and an explicit retention.
    const lookupLogs = logs('S3PrefixListLookupLogs');
    const lookupRole = new Role(this, 'S3PrefixListLookupRole', {
      assumedBy: new ServicePrincipal('lambda.amazonaws.com'),
      description: 'Ferry: looks up the S3 prefix list id at deploy time',
    });
    lookupRole.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [lookupLogs.logGroupArn],
      }),
    );
    const s3PrefixList = new AwsCustomResource(this, 'S3PrefixList', {
      role: lookupRole,
      logGroup: lookupLogs,
      onUpdate: {
        service: 'EC2',
        action: 'describePrefixLists',
        parameters: {
          Filters: [{ Name: 'prefix-list-name', Values: [`com.amazonaws.${Stack.of(this).region}.s3`] }],
        },
        physicalResourceId: PhysicalResourceId.of('ferry-s3-prefix-list'),
        outputPaths: ['PrefixLists.0.PrefixListId'],
      },
      policy: AwsCustomResourcePolicy.fromSdkCalls({ resources: AwsCustomResourcePolicy.ANY_RESOURCE }),
      installLatestAwsSdk: false,
    });
    acknowledgeRules(s3PrefixList, {
      'AwsSolutions-IAM5[Resource::*]':
        'ec2:DescribePrefixLists has no resource-level permissions; it is read-only and called once per deployment.',
    });
    securityGroup.addEgressRule(
      Peer.prefixList(s3PrefixList.getResponseField('PrefixLists.0.PrefixListId')),
      Port.tcp(443),
      'S3 through the gateway endpoint',
    );
    return { vpc, subnetIds, securityGroup, assignPublicIp: false, internetEgress: false };
  }
}
