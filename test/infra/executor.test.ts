// What `cdk deploy` would create for the default FerryExecutor: every resource the issue
// names, the functions' bundle and settings, and the least privilege of every role.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Match } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INDEXES, SORT_KEY, TABLE_KEY, TTL_ATTRIBUTE, tableDefinition } from '#shared/adapters/aws/table.ts';
import { loadConfig } from '#shared/config.ts';
import {
  actionsOf,
  allowing,
  resourcesOf,
  type Statement,
  type Synthesized,
  statementsOf,
  synthFerry,
} from './synth.ts';

const HANDLERS = ['api', 'dispatcher', 'taskEvents', 'sweeper'] as const;

let s: Synthesized;
beforeAll(() => {
  // Bundles for real (local esbuild, no Docker), as `npx cdk synth` does.
  s = synthFerry({}, { bundle: true });
});
afterAll(() => s?.cleanup());

type FunctionResource = {
  Properties: {
    Handler: string;
    Runtime: string;
    Architectures: string[];
    Environment: { Variables: Record<string, unknown> };
    LoggingConfig: { LogGroup: { Ref: string } };
    Code: { S3Key: string };
    Role: { 'Fn::GetAtt': [string, string] };
  };
};

const ferryFunctions = () =>
  Object.entries(
    s.template.findResources('AWS::Lambda::Function') as Record<string, FunctionResource>,
  ).filter(([, fn]) => fn.Properties.Environment?.Variables?.FERRY_TABLE_NAME !== undefined);

const roleOf = (handler: (typeof HANDLERS)[number]) => s.id(s.ferry.functions[handler].functionRole);
const statementsOfHandler = (handler: (typeof HANDLERS)[number]) => statementsOf(s.template, roleOf(handler));
const ref = (construct: Parameters<Synthesized['id']>[0]) => ({ Ref: s.id(construct) });
const arnOf = (construct: Parameters<Synthesized['id']>[0]) => ({ 'Fn::GetAtt': [s.id(construct), 'Arn'] });

/** Values a deployment would give the tokens, so the real config parser can judge the settings. */
function deployedEnvironment(variables: Record<string, unknown>): Record<string, string> {
  const placeholders: Record<string, string> = {
    FERRY_TABLE_NAME: 'ferry-table',
    FERRY_QUEUE_URL: 'https://sqs.eu-west-1.amazonaws.com/123456789012/ferry-dispatch',
    FERRY_BUCKET: 'ferry-results',
    FERRY_CLUSTER: 'ferry-cluster',
    FERRY_SUBNETS: 'subnet-1,subnet-2',
    FERRY_SECURITY_GROUPS: 'sg-1',
    FERRY_TASK_ROLE_ARN: 'arn:aws:iam::123456789012:role/task',
    FERRY_EXECUTION_ROLE_ARN: 'arn:aws:iam::123456789012:role/execution',
    FERRY_LOG_GROUP: 'ferry-tasks',
    FERRY_RUNNER_IMAGE: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/cdk-assets:runner',
    FERRY_API_URL: 'https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com',
  };
  return Object.fromEntries(
    Object.entries(variables).map(([name, value]) => [
      name,
      typeof value === 'string' ? value : (placeholders[name] ?? `unresolved ${name}`),
    ]),
  );
}

describe('the functions', () => {
  it('are four, one per handler, on Node 22 and arm64', () => {
    const functions = ferryFunctions();
    expect(functions.map(([, fn]) => fn.Properties.Handler).sort()).toEqual(
      HANDLERS.map((h) => `index.${h}`).sort(),
    );
    for (const [, fn] of functions) {
      expect(fn.Properties.Runtime).toBe('nodejs22.x');
      expect(fn.Properties.Architectures).toEqual(['arm64']);
    }
  });

  it('each log to their own log group, kept for a month', () => {
    const groups = s.template.findResources('AWS::Logs::LogGroup') as Record<
      string,
      { Properties: { RetentionInDays?: number } }
    >;
    const used = ferryFunctions().map(([, fn]) => fn.Properties.LoggingConfig.LogGroup.Ref);
    expect(new Set(used).size).toBe(4);
    for (const group of used) expect(groups[group]?.Properties.RetentionInDays).toBe(30);
  });

  it('carry a complete set of settings that the Lambda configuration accepts', () => {
    for (const [, fn] of ferryFunctions()) {
      const { NODE_OPTIONS, ...ferry } = fn.Properties.Environment.Variables;
      expect(NODE_OPTIONS).toBe('--enable-source-maps');
      const config = loadConfig({ ...deployedEnvironment(ferry), AWS_REGION: 'eu-west-1' });
      expect(config.aws).toMatchObject({
        tableName: 'ferry-table',
        assignPublicIp: true,
        networkIsolation: 'open',
        capacityProvider: 'FARGATE',
        retentionDays: 30,
      });
      expect(config.policy.allowEgress).toBe(true);
    }
  });

  it('share one bundle: ESM, minified, with a source map, the SDK inside', () => {
    const keys = new Set(ferryFunctions().map(([, fn]) => fn.Properties.Code.S3Key));
    expect(keys.size).toBe(1);
    const [key] = [...keys];
    const directory = path.join(s.outdir, `asset.${String(key).replace(/\.zip$/, '')}`);
    expect(fs.readdirSync(directory).sort()).toEqual(['index.mjs', 'index.mjs.map']);
    const code = fs.readFileSync(path.join(directory, 'index.mjs'), 'utf8');
    expect(code.startsWith("import { createRequire as __ferryRequire } from 'node:module';")).toBe(true);
    // Minified: whole modules on one line (only multi-line string literals break lines).
    expect(code.length / code.split('\n').length).toBeGreaterThan(1000);
  });

  it('bundle loads with no node_modules beside it and exports the four handlers', () => {
    const [, fn] = ferryFunctions()[0] ?? [];
    const bundle = path.join(
      s.outdir,
      `asset.${fn?.Properties.Code.S3Key.replace(/\.zip$/, '')}`,
      'index.mjs',
    );
    const { NODE_OPTIONS: _, ...ferry } = fn?.Properties.Environment.Variables ?? {};
    const exported = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const m = await import(${JSON.stringify(pathToFileURL(bundle).href)}); console.log(JSON.stringify(Object.keys(m).sort()));`,
      ],
      {
        // Outside the repository: an import the bundle left external would not resolve.
        cwd: s.outdir,
        env: { PATH: process.env.PATH, AWS_REGION: 'eu-west-1', ...deployedEnvironment(ferry) },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    expect(JSON.parse(exported)).toEqual([...HANDLERS].sort());
  });
});

describe('the HTTP API', () => {
  it('routes every path and method to the api function, IAM-authorized', () => {
    s.template.hasResourceProperties('AWS::ApiGatewayV2::Api', { ProtocolType: 'HTTP' });
    const routes = s.template.findResources('AWS::ApiGatewayV2::Route');
    expect(Object.values(routes).map((r) => r.Properties)).toEqual([
      expect.objectContaining({ RouteKey: 'ANY /{proxy+}', AuthorizationType: 'AWS_IAM' }),
    ]);
    s.template.hasResourceProperties('AWS::ApiGatewayV2::Integration', {
      IntegrationType: 'AWS_PROXY',
      PayloadFormatVersion: '2.0',
      IntegrationUri: arnOf(s.ferry.functions.api),
    });
  });

  it('has one auto-deployed stage, throttled, with access logs naming the caller', () => {
    s.template.resourceCountIs('AWS::ApiGatewayV2::Stage', 1);
    s.template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      AutoDeploy: true,
      DefaultRouteSettings: { ThrottlingRateLimit: 50, ThrottlingBurstLimit: 100 },
      AccessLogSettings: {
        DestinationArn: Match.anyValue(),
        Format: Match.stringLikeRegexp('\\$context\\.identity\\.userArn'),
      },
    });
  });
});

describe('the queue', () => {
  it('sets a message aside after 5 receives, and the dead letters raise an alarm', () => {
    s.template.hasResourceProperties('AWS::SQS::Queue', {
      RedrivePolicy: { deadLetterTargetArn: arnOf(s.ferry.deadLetterQueue), maxReceiveCount: 5 },
    });
    s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/SQS',
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Dimensions: [
        { Name: 'QueueName', Value: { 'Fn::GetAtt': [s.id(s.ferry.deadLetterQueue), 'QueueName'] } },
      ],
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      Threshold: 1,
    });
  });

  it('feeds the dispatcher in batches that report their failures one by one', () => {
    s.template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: arnOf(s.ferry.queue),
      FunctionName: ref(s.ferry.functions.dispatcher),
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
  });

  it('keeps a message hidden six times the dispatcher’s timeout, as AWS advises', () => {
    const dispatcher = s.template.findResources('AWS::Lambda::Function')[s.id(s.ferry.functions.dispatcher)];
    const timeout = dispatcher?.Properties.Timeout as number;
    const queue = s.template.findResources('AWS::SQS::Queue')[s.id(s.ferry.queue)];
    expect(timeout).toBeGreaterThan(0);
    expect(queue?.Properties.VisibilityTimeout).toBeGreaterThanOrEqual(6 * timeout);
  });

  it('runs few dispatchers at once, so a burst waits in the queue rather than contending on the ledger', () => {
    s.template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: arnOf(s.ferry.queue),
      ScalingConfig: { MaximumConcurrency: 3 },
    });
  });

  it('all three queues (dispatch and two dead-letter) are encrypted and refuse requests without TLS', () => {
    const queues = s.template.findResources('AWS::SQS::Queue');
    expect(Object.keys(queues)).toHaveLength(3);
    for (const queue of Object.values(queues)) expect(queue.Properties.SqsManagedSseEnabled).toBe(true);
    const policies = Object.values(s.template.findResources('AWS::SQS::QueuePolicy'));
    expect(policies).toHaveLength(3);
    for (const policy of policies) {
      expect(policy.Properties.PolicyDocument.Statement).toContainEqual(
        expect.objectContaining({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
      );
    }
  });
});

describe('the table', () => {
  it('is on-demand with point-in-time recovery and a TTL', () => {
    s.template.hasResourceProperties('AWS::DynamoDB::Table', {
      BillingMode: 'PAY_PER_REQUEST',
      KeySchema: [{ AttributeName: TABLE_KEY, KeyType: 'HASH' }],
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
      DeletionProtectionEnabled: true,
    });
  });

  it('has exactly the indexes the adapters query, as the emulator tests create them', () => {
    const [table] = Object.values(s.template.findResources('AWS::DynamoDB::Table'));
    if (table === undefined) throw new Error('no table');
    const bySame = (a: { IndexName: string }, b: { IndexName: string }) =>
      a.IndexName.localeCompare(b.IndexName);
    const expected = tableDefinition('any');
    expect([...table.Properties.GlobalSecondaryIndexes].sort(bySame)).toEqual(
      [...expected.GlobalSecondaryIndexes].sort(bySame),
    );
    expect(Object.values(INDEXES).map((i) => i.name)).toEqual([
      'byOwner',
      'byOwnerState',
      'byState',
      'queueHead',
      'queueAge',
    ]);
    const attributes = (list: { AttributeName: string }[]) => list.map((a) => a.AttributeName).sort();
    expect(attributes(table.Properties.AttributeDefinitions)).toEqual(
      attributes(expected.AttributeDefinitions),
    );
    expect(attributes(expected.AttributeDefinitions)).toContain(SORT_KEY);
  });
});

describe('the results bucket', () => {
  it('blocks public access, encrypts, and expires results', () => {
    s.template.hasResourceProperties('AWS::S3::Bucket', {
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
      },
      LifecycleConfiguration: {
        Rules: Match.arrayWith([
          Match.objectLike({ Prefix: 'executions/', ExpirationInDays: 30, Status: 'Enabled' }),
          Match.objectLike({ AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } }),
        ]),
      },
    });
  });

  it('refuses any request made without TLS', () => {
    s.template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: ref(s.ferry.resultsBucket),
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Principal: { AWS: '*' },
            Action: 's3:*',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
  });
});

describe('compute', () => {
  it('is a cluster with the Fargate and Fargate Spot capacity providers', () => {
    s.template.hasResourceProperties('AWS::ECS::ClusterCapacityProviderAssociations', {
      Cluster: ref(s.ferry.cluster),
      CapacityProviders: Match.arrayEquals(['FARGATE', 'FARGATE_SPOT']),
    });
  });

  it('runs the runner image built from runner/Dockerfile with only what it copies', () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(s.outdir, 'Ferry.assets.json'), 'utf8')) as {
      dockerImages: Record<string, { source: { directory: string; dockerFile: string; platform: string } }>;
    };
    const images = Object.entries(manifest.dockerImages);
    expect(images).toHaveLength(1);
    const [hash, image] = images[0] ?? [];
    expect(image?.source).toMatchObject({ dockerFile: 'runner/Dockerfile', platform: 'linux/amd64' });
    const context = path.join(s.outdir, image?.source.directory ?? '');
    const files = fs.readdirSync(context, { recursive: true }).map(String);
    expect(files).toEqual(
      expect.arrayContaining([
        'package.json',
        'package-lock.json',
        'tsconfig.json',
        path.join('runner', 'Dockerfile'),
        path.join('runner', 'publisher-main.ts'),
        path.join('scripts', 'bundle-publisher.mjs'),
        path.join('shared', 'config.ts'),
      ]),
    );
    const topLevel = fs.readdirSync(context).filter((name) => name !== '.dockerignore');
    expect(topLevel.sort()).toEqual([
      'package-lock.json',
      'package.json',
      'runner',
      'scripts',
      'shared',
      'tsconfig.json',
    ]);
    for (const [, fn] of ferryFunctions()) {
      expect(JSON.stringify(fn.Properties.Environment.Variables.FERRY_RUNNER_IMAGE)).toContain(`:${hash}`);
    }
  });

  it('sends this cluster’s task state changes, and only those, to the task-events function', () => {
    s.template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.ecs'],
        'detail-type': ['ECS Task State Change'],
        detail: { clusterArn: [arnOf(s.ferry.cluster)] },
      },
      Targets: [Match.objectLike({ Arn: arnOf(s.ferry.functions.taskEvents) })],
    });
  });

  it('keeps task events it could not deliver after retries in a dead-letter queue that alarms', () => {
    s.template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: Match.objectLike({ 'detail-type': ['ECS Task State Change'] }),
      Targets: [
        Match.objectLike({
          Arn: arnOf(s.ferry.functions.taskEvents),
          RetryPolicy: { MaximumRetryAttempts: 8, MaximumEventAgeInSeconds: 7200 },
          DeadLetterConfig: { Arn: arnOf(s.ferry.taskEventDeadLetterQueue) },
        }),
      ],
    });
    // EventBridge may send to it, and only for this rule.
    s.template.hasResourceProperties('AWS::SQS::QueuePolicy', {
      Queues: [ref(s.ferry.taskEventDeadLetterQueue)],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Action: 'sqs:SendMessage',
            Principal: { Service: 'events.amazonaws.com' },
            Condition: { ArnEquals: { 'aws:SourceArn': Match.anyValue() } },
          }),
        ]),
      },
    });
    s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Dimensions: [
        {
          Name: 'QueueName',
          Value: { 'Fn::GetAtt': [s.id(s.ferry.taskEventDeadLetterQueue), 'QueueName'] },
        },
      ],
      Threshold: 1,
    });
  });

  it('runs the sweeper every minute', () => {
    s.template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 minute)',
      Targets: [Match.objectLike({ Arn: arnOf(s.ferry.functions.sweeper) })],
    });
    // A failed sweep is not retried: the next one comes a minute later.
    s.template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: ref(s.ferry.functions.sweeper),
      MaximumRetryAttempts: 0,
    });
  });
});

describe('the network (default layout)', () => {
  it('is public subnets with no NAT gateway; tasks get a public IP and accept no inbound traffic', () => {
    s.template.resourceCountIs('AWS::EC2::NatGateway', 0);
    s.template.resourceCountIs('AWS::EC2::VPCEndpoint', 0);
    for (const subnet of Object.values(s.template.findResources('AWS::EC2::Subnet'))) {
      expect(subnet.Properties.Tags).toContainEqual({ Key: 'aws-cdk:subnet-type', Value: 'Public' });
      expect(subnet.Properties.MapPublicIpOnLaunch).toBe(false);
    }
    const [group] = Object.values(s.template.findResources('AWS::EC2::SecurityGroup'));
    expect(group?.Properties.SecurityGroupIngress).toBeUndefined();
    s.template.resourceCountIs('AWS::EC2::FlowLog', 1);
  });
});

describe('least privilege', () => {
  const ferryRoles = () => [...HANDLERS.map(roleOf), s.id(s.ferry.taskRole), s.id(s.ferry.taskExecutionRole)];

  it('no Ferry role has a managed policy or a wildcard action', () => {
    const roles = s.template.findResources('AWS::IAM::Role');
    for (const role of ferryRoles()) {
      expect(roles[role]?.Properties.ManagedPolicyArns).toBeUndefined();
      for (const statement of statementsOf(s.template, role)) {
        for (const action of actionsOf(statement)) expect(action).not.toContain('*');
      }
    }
  });

  it('grants on every resource only what has no resource-level permission', () => {
    const allowedOnAnyResource = new Set([
      'ecs:DescribeTaskDefinition',
      'ecs:RegisterTaskDefinition',
      'ecs:ListTasks',
      'ecr:GetAuthorizationToken',
    ]);
    for (const role of ferryRoles()) {
      for (const statement of statementsOf(s.template, role)) {
        if (!resourcesOf(statement).includes('*')) continue;
        for (const action of actionsOf(statement)) expect(allowedOnAnyResource).toContain(action);
      }
    }
    const [listTasks] = allowing(statementsOfHandler('dispatcher'), 'ecs:ListTasks');
    expect(listTasks?.Condition).toEqual({ ArnEquals: { 'ecs:cluster': arnOf(s.ferry.cluster) } });
  });

  it('holds RunTask to Ferry’s task definition families on this cluster', () => {
    const runTask = allowing(statementsOfHandler('dispatcher'), 'ecs:RunTask');
    expect(runTask).toHaveLength(1);
    expect(runTask[0]?.Condition).toEqual({ ArnEquals: { 'ecs:cluster': arnOf(s.ferry.cluster) } });
    expect(JSON.stringify(runTask[0]?.Resource)).toContain(':task-definition/ferry-*:*');
    for (const handler of ['api', 'taskEvents', 'sweeper'] as const) {
      expect(allowing(statementsOfHandler(handler), 'ecs:RunTask')).toEqual([]);
    }
  });

  it('holds StopTask and DescribeTasks to this cluster’s tasks, for the handlers that call them', () => {
    const calls: Record<(typeof HANDLERS)[number], string[]> = {
      api: ['ecs:StopTask'],
      dispatcher: ['ecs:StopTask', 'ecs:DescribeTasks'],
      sweeper: ['ecs:StopTask', 'ecs:DescribeTasks'],
      taskEvents: [],
    };
    for (const handler of HANDLERS) {
      const statements = statementsOfHandler(handler);
      for (const action of ['ecs:StopTask', 'ecs:DescribeTasks']) {
        const found = allowing(statements, action);
        if (!calls[handler].includes(action)) {
          expect(found, `${handler} ${action}`).toEqual([]);
          continue;
        }
        expect(found, `${handler} ${action}`).toHaveLength(1);
        expect(found[0]?.Condition).toEqual({ ArnEquals: { 'ecs:cluster': arnOf(s.ferry.cluster) } });
        expect(JSON.stringify(found[0]?.Resource)).toContain(`:task/`);
        expect(JSON.stringify(found[0]?.Resource)).toContain(s.id(s.ferry.cluster));
      }
    }
  });

  it('lets only the dispatcher pass roles, and only the two task roles, only to ECS tasks', () => {
    const passRole = allowing(statementsOfHandler('dispatcher'), 'iam:PassRole');
    expect(passRole).toHaveLength(1);
    const passed = resourcesOf(passRole[0] as Statement).map((r) => JSON.stringify(r));
    expect(passed.sort()).toEqual(
      [arnOf(s.ferry.taskRole), arnOf(s.ferry.taskExecutionRole)].map((r) => JSON.stringify(r)).sort(),
    );
    expect(passRole[0]?.Condition).toEqual({
      StringEquals: { 'iam:PassedToService': 'ecs-tasks.amazonaws.com' },
    });
    for (const role of [
      roleOf('api'),
      roleOf('taskEvents'),
      roleOf('sweeper'),
      s.id(s.ferry.taskRole),
      s.id(s.ferry.taskExecutionRole),
    ]) {
      expect(allowing(statementsOf(s.template, role), 'iam:PassRole')).toEqual([]);
    }
  });

  it('gives each handler only its own table, queue and bucket operations', () => {
    const actions = (handler: (typeof HANDLERS)[number]) =>
      statementsOfHandler(handler)
        .flatMap(actionsOf)
        .filter((a) => /^(dynamodb|sqs|s3):/.test(a))
        .sort();
    const table = [
      'dynamodb:DeleteItem',
      'dynamodb:GetItem',
      'dynamodb:PutItem',
      'dynamodb:Query',
      'dynamodb:UpdateItem',
    ];
    const consume = [
      'sqs:ChangeMessageVisibility',
      'sqs:DeleteMessage',
      'sqs:GetQueueAttributes',
      'sqs:GetQueueUrl',
      'sqs:ReceiveMessage',
    ];
    expect(actions('api')).toEqual(
      [
        ...table,
        's3:AbortMultipartUpload',
        's3:DeleteObject',
        's3:GetObject',
        // Sizing inputs for a bid: the deployment's inputs/.
        's3:GetObject',
        's3:ListBucket',
        's3:ListBucket',
        's3:PutObject',
        'sqs:SendMessage',
      ].sort(),
    );
    expect(actions('dispatcher')).toEqual([...table, ...consume, 'sqs:SendMessage'].sort());
    expect(actions('taskEvents')).toEqual([...table, 's3:GetObject', 's3:ListBucket'].sort());
    expect(actions('sweeper')).toEqual([...table, 's3:GetObject', 's3:ListBucket', 'sqs:SendMessage'].sort());
  });

  it('lets the handlers that read results tell a missing result (404) from a denied one', () => {
    // Without s3:ListBucket, S3 answers 403 for a key that does not exist: a task that stopped
    // before storing its result would then fail the handler and keep its capacity.
    for (const handler of ['api', 'taskEvents', 'sweeper'] as const) {
      const statements = statementsOfHandler(handler);
      const [list] = allowing(statements, 's3:ListBucket');
      expect(list?.Resource, handler).toEqual(arnOf(s.ferry.resultsBucket));
      expect(list?.Condition, handler).toEqual({ StringLike: { 's3:prefix': ['executions/*'] } });
      // The api also reads inputs/ (below), never another prefix of executions.
      expect(allowing(statements, 's3:GetObject'), handler).toHaveLength(handler === 'api' ? 2 : 1);
    }
    for (const handler of ['taskEvents', 'sweeper'] as const) {
      const [manifests] = allowing(statementsOfHandler(handler), 's3:GetObject');
      expect(JSON.stringify(manifests?.Resource), handler).toContain('/executions/*/result.json');
    }
  });

  it('lets tasks and the api read inputs/ of the bucket (objects, and listings under it), nothing else of it', () => {
    const inputReads = (statements: Statement[]) => [
      ...allowing(statements, 's3:GetObject')
        .map((st) => JSON.stringify(st.Resource))
        .filter((r) => r.includes('/inputs/')),
      ...allowing(statements, 's3:ListBucket')
        .filter((st) => JSON.stringify(st.Condition).includes('inputs/'))
        .map((st) => JSON.stringify(st.Condition)),
    ];
    const expected = [
      JSON.stringify({
        'Fn::Join': ['', [{ 'Fn::GetAtt': [s.id(s.ferry.resultsBucket), 'Arn'] }, '/inputs/*']],
      }),
      JSON.stringify({ StringLike: { 's3:prefix': ['inputs/*'] } }),
    ];
    expect(inputReads(statementsOf(s.template, s.id(s.ferry.taskRole)))).toEqual(expected);
    expect(inputReads(statementsOfHandler('api'))).toEqual(expected);
    for (const handler of ['dispatcher', 'taskEvents', 'sweeper'] as const) {
      expect(inputReads(statementsOfHandler(handler)), handler).toEqual([]);
    }
  });

  it('reads other input sources where the deployer allows them, whole path segments only', () => {
    const other = synthFerry({ inputSources: ['s3://reference-data/genomes', 'https://example.org/files/'] });
    try {
      const reads = statementsOf(other.template, other.id(other.ferry.taskRole));
      expect(JSON.stringify(allowing(reads, 's3:GetObject'))).toContain(':s3:::reference-data/genomes/*');
      expect(allowing(reads, 's3:ListBucket').map((st) => st.Condition?.StringLike?.['s3:prefix'])).toEqual([
        ['inputs/*'],
        ['genomes/*'],
      ]);
      const functions = Object.values(other.template.findResources('AWS::Lambda::Function')).filter(
        (fn) => fn.Properties.Environment?.Variables?.FERRY_TABLE_NAME !== undefined,
      );
      expect(functions.map((fn) => fn.Properties.Environment.Variables.FERRY_INPUT_ALLOW)).toEqual(
        Array(4).fill('s3://reference-data/genomes,https://example.org/files/'),
      );
    } finally {
      other.cleanup();
    }
    expect(() =>
      synthFerry({ network: { layout: 'isolated-subnets' }, inputSources: ['https://example.org/files/'] }),
    ).toThrow(
      'inputSources: https://example.org/files/: this network layout gives tasks no route to the internet, only to S3',
    );
  });

  it('gives tasks no S3 write: they may call the upload-links route of this API, and read inputs', () => {
    // Every container of a task, the job's included, can reach these credentials.
    const statements = statementsOf(s.template, s.id(s.ferry.taskRole));
    expect(statements.flatMap(actionsOf).sort()).toEqual(
      ['execute-api:Invoke', 's3:GetObject', 's3:ListBucket'].sort(),
    );
    const [invoke] = allowing(statements, 'execute-api:Invoke');
    expect(invoke?.Condition).toBeUndefined();
    expect(resourcesOf(invoke as Statement)).toEqual([
      {
        'Fn::Join': [
          '',
          [
            'arn:',
            { Ref: 'AWS::Partition' },
            ':execute-api:',
            { Ref: 'AWS::Region' },
            ':',
            { Ref: 'AWS::AccountId' },
            ':',
            ref(s.ferry.api),
            '/$default/POST/v1/executions/*/uploads',
          ],
        ],
      },
    ]);
  });

  it('hands the dispatcher this API’s URL for the tasks, and lets the api sign only the publisher’s keys', () => {
    const dispatcher = ferryFunctions().find(([, fn]) => fn.Properties.Handler === 'index.dispatcher');
    expect(JSON.stringify(dispatcher?.[1].Properties.Environment.Variables.FERRY_API_URL)).toContain(
      JSON.stringify(ref(s.ferry.api)),
    );
    const others = ferryFunctions().filter(([, fn]) => fn.Properties.Handler !== 'index.dispatcher');
    for (const [, fn] of others) expect(fn.Properties.Environment.Variables.FERRY_API_URL).toBeUndefined();
    expect(allowing(statementsOfHandler('dispatcher'), 'execute-api:Invoke')).toEqual([]);

    const api = statementsOfHandler('api');
    const [writes] = allowing(api, 's3:PutObject');
    expect(allowing(api, 's3:PutObject')).toHaveLength(1);
    expect(actionsOf(writes as Statement).sort()).toEqual(['s3:AbortMultipartUpload', 's3:PutObject']);
    const keys = resourcesOf(writes as Statement).map((r) => JSON.stringify(r));
    for (const key of ['stdout', 'stderr', 'result.json', 'live/*', 'outputs/*']) {
      expect(keys.some((k) => k.endsWith(`/executions/*/${key}"]]}`))).toBe(true);
    }
    expect(keys).toHaveLength(5);
    for (const handler of ['dispatcher', 'taskEvents', 'sweeper'] as const) {
      expect(allowing(statementsOfHandler(handler), 's3:PutObject'), handler).toEqual([]);
    }
  });

  it('lets tasks’ execution role pull images and write logs, nothing else', () => {
    const execution = statementsOf(s.template, s.id(s.ferry.taskExecutionRole));
    expect(execution.flatMap(actionsOf).sort()).toEqual(
      [
        'ecr:BatchCheckLayerAvailability',
        'ecr:BatchGetImage',
        'ecr:GetAuthorizationToken',
        'ecr:GetDownloadUrlForLayer',
        'logs:CreateLogStream',
        'logs:PutLogEvents',
      ].sort(),
    );
    expect(resourcesOf(allowing(execution, 'logs:PutLogEvents')[0] as Statement)).toEqual([
      arnOf(s.ferry.taskLogs),
    ]);
  });
});
