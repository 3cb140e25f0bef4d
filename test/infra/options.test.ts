// The construct's typed props: what each turns into, and what is refused at synth time.
import { App, type CfnElement, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { SubnetType, Vpc } from 'aws-cdk-lib/aws-ec2';
import { Repository } from 'aws-cdk-lib/aws-ecr';
import { Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import type { CfnFunction } from 'aws-cdk-lib/aws-lambda';
import type { IConstruct } from 'constructs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FerryExecutor } from '../../infra/ferry-executor.ts';
import { actionsOf, allowing, resourcesOf, type Synthesized, statementsOf, synthFerry } from './synth.ts';

const settingsOf = (s: Synthesized) => {
  const functions = Object.values(s.template.findResources('AWS::Lambda::Function')).filter(
    (fn) => fn.Properties.Environment?.Variables?.FERRY_TABLE_NAME !== undefined,
  );
  expect(functions).toHaveLength(4);
  // One configuration, four functions; the dispatcher alone also hands tasks the API's URL.
  const [first, ...rest] = functions.map((fn) => {
    const { FERRY_API_URL: _, ...shared } = fn.Properties.Environment.Variables as Record<string, unknown>;
    return shared;
  });
  for (const other of rest) expect(other).toEqual(first);
  return first ?? {};
};

let isolated: Synthesized;
let tuned: Synthesized;
beforeAll(() => {
  isolated = synthFerry({ network: { layout: 'isolated-subnets' } });
  tuned = synthFerry({
    jobLimits: { maxTimeout: Duration.hours(2), allowEgress: false },
    capacity: { maxConcurrentJobs: 8, maxVcpus: 16, maxMemoryMiB: 32768, capacityProvider: 'FARGATE_SPOT' },
    images: {
      allow: ['public.ecr.aws/*', '123456789012.dkr.ecr.*'],
      deny: ['*:latest'],
      registries: ['public.ecr.aws', '123456789012.dkr.ecr.*.amazonaws.com'],
    },
    resultRetention: Duration.days(7),
    logLevel: 'debug',
    publishDestinations: ['s3://team-results/ferry/'],
    removalPolicy: RemovalPolicy.DESTROY,
    dispatcherConcurrency: 5,
  });
});
afterAll(() => {
  isolated?.cleanup();
  tuned?.cleanup();
});

describe('the isolated network layout', () => {
  it('has no route to the internet and tells the functions network "none" holds', () => {
    isolated.template.resourceCountIs('AWS::EC2::InternetGateway', 0);
    isolated.template.resourceCountIs('AWS::EC2::NatGateway', 0);
    for (const subnet of Object.values(isolated.template.findResources('AWS::EC2::Subnet'))) {
      expect(subnet.Properties.Tags).toContainEqual({ Key: 'aws-cdk:subnet-type', Value: 'Isolated' });
    }
    expect(settingsOf(isolated)).toMatchObject({
      FERRY_NETWORK_ISOLATION: 'isolated',
      FERRY_ASSIGN_PUBLIC_IP: 'false',
      FERRY_ALLOW_EGRESS: 'false',
    });
  });

  it('gives tasks a security group that reaches only the endpoints and S3, over HTTPS', () => {
    const taskGroup = isolated.id(isolated.ferry.taskSecurityGroup);
    const task = isolated.template.findResources('AWS::EC2::SecurityGroup')[taskGroup];
    expect(task?.Properties.SecurityGroupIngress).toBeUndefined();
    // Never empty: an empty inline list would leave EC2's default allow-all egress in place.
    expect(task?.Properties.SecurityGroupEgress).toEqual([
      expect.objectContaining({ CidrIp: '10.0.0.0/16', IpProtocol: 'tcp', FromPort: 443, ToPort: 443 }),
    ]);
    const separate = Object.values(isolated.template.findResources('AWS::EC2::SecurityGroupEgress'))
      .map((rule) => rule.Properties)
      .filter((rule) => rule.GroupId['Fn::GetAtt']?.[0] === taskGroup);
    expect(separate).toEqual([
      expect.objectContaining({
        IpProtocol: 'tcp',
        FromPort: 443,
        ToPort: 443,
        DestinationPrefixListId: { 'Fn::GetAtt': [expect.any(String), 'PrefixLists.0.PrefixListId'] },
      }),
    ]);
  });

  it('lets tasks, which cannot reach the API there, write results but never read or list them', () => {
    const statements = statementsOf(isolated.template, isolated.id(isolated.ferry.taskRole));
    expect(statements.flatMap(actionsOf).sort()).toEqual(
      ['s3:AbortMultipartUpload', 's3:DeleteObject', 's3:GetObject', 's3:ListBucket', 's3:PutObject'].sort(),
    );
    // What they read is inputs, never results.
    expect(JSON.stringify(allowing(statements, 's3:GetObject').map((st) => st.Resource))).not.toContain(
      'executions',
    );
    expect(allowing(statements, 's3:ListBucket').map((st) => st.Condition)).toEqual([
      { StringLike: { 's3:prefix': ['inputs/*'] } },
    ]);
    expect(JSON.stringify(allowing(statements, 's3:PutObject')[0]?.Resource)).toContain('/executions/*');
    expect(JSON.stringify(allowing(statements, 's3:DeleteObject')[0]?.Resource)).toContain(
      '/executions/*/live/*',
    );
    // No dispatcher hands out the API's URL, so publishers write to the bucket themselves.
    const functions = Object.values(isolated.template.findResources('AWS::Lambda::Function'));
    for (const fn of functions) expect(fn.Properties.Environment?.Variables?.FERRY_API_URL).toBeUndefined();
    const api = statementsOf(isolated.template, isolated.id(isolated.ferry.functions.api.functionRole));
    expect(allowing(api, 's3:PutObject')).toEqual([]);
  });

  it('refuses to allow egress jobs it could not honour', () => {
    const stack = new Stack(new App(), 'Ferry');
    expect(
      () =>
        new FerryExecutor(stack, 'Executor', {
          network: { layout: 'isolated-subnets' },
          jobLimits: { allowEgress: true },
        }),
    ).toThrow(/no route to the internet/);
  });
});

describe('an existing VPC', () => {
  it('places tasks in the chosen subnets and adds no network resources of its own', () => {
    const stack = new Stack(new App({ context: { 'aws:cdk:bundling-stacks': [] } }), 'Ferry');
    const vpc = new Vpc(stack, 'Theirs', {
      natGateways: 1,
      subnetConfiguration: [
        { name: 'public', subnetType: SubnetType.PUBLIC },
        { name: 'private', subnetType: SubnetType.PRIVATE_WITH_EGRESS },
      ],
    });
    const ferry = new FerryExecutor(stack, 'Executor', {
      network: {
        layout: 'existing-vpc',
        vpc,
        subnets: { subnetGroupName: 'private' },
        assignPublicIp: false,
        internetEgress: true,
      },
    });
    expect(ferry.vpc).toBe(vpc);
    const template = Template.fromStack(stack);
    template.resourceCountIs('AWS::EC2::VPC', 1);
    template.resourceCountIs('AWS::EC2::VPCEndpoint', 0);
    template.resourceCountIs('AWS::EC2::NatGateway', 1);
    const subnets = stack.resolve(vpc.selectSubnets({ subnetGroupName: 'private' }).subnetIds);
    const env = template.toJSON().Resources[
      stack.getLogicalId(ferry.functions.dispatcher.node.defaultChild as CfnFunction)
    ].Properties.Environment as { Variables: Record<string, unknown> };
    expect(env.Variables.FERRY_SUBNETS).toEqual({ 'Fn::Join': [',', subnets] });
    expect(env.Variables.FERRY_ASSIGN_PUBLIC_IP).toBe('false');
    expect(env.Variables.FERRY_NETWORK_ISOLATION).toBe('open');
  });
});

describe('settings', () => {
  it('turn job limits, the capacity budget, the image policy and retention into the functions’ settings', () => {
    expect(settingsOf(tuned)).toMatchObject({
      FERRY_MAX_TIMEOUT_SECONDS: '7200',
      FERRY_ALLOW_EGRESS: 'false',
      FERRY_MAX_CONCURRENCY: '8',
      FERRY_MAX_CPU: '16',
      FERRY_MAX_MEMORY: '32768',
      FERRY_CAPACITY_PROVIDER: 'FARGATE_SPOT',
      FERRY_IMAGE_ALLOW: 'public.ecr.aws/*,123456789012.dkr.ecr.*',
      FERRY_IMAGE_DENY: '*:latest',
      FERRY_REGISTRY_ALLOW: 'public.ecr.aws,123456789012.dkr.ecr.*.amazonaws.com',
      FERRY_PUBLISH_ALLOW: 's3://team-results/ferry/*',
      FERRY_RETENTION_DAYS: '7',
      FERRY_LOG_LEVEL: 'debug',
    });
    tuned.template.hasResourceProperties('AWS::S3::Bucket', {
      LifecycleConfiguration: {
        Rules: Match.arrayWith([Match.objectLike({ Prefix: 'executions/', ExpirationInDays: 7 })]),
      },
    });
  });

  it('let the api publish accepted results to the destinations given, and nowhere else', () => {
    const statements = statementsOf(tuned.template, tuned.id(tuned.ferry.functions.api.functionRole));
    // Beside the one that signs upload links in the results bucket.
    const results = tuned.id(tuned.ferry.resultsBucket);
    const puts = allowing(statements, 's3:PutObject').filter(
      (p) => !JSON.stringify(p.Resource).includes(results),
    );
    expect(puts).toHaveLength(1);
    expect(resourcesOf(puts[0] ?? { Effect: '', Action: [], Resource: [] })).toEqual([
      { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':s3:::team-results/ferry/*']] },
    ]);
  });

  it('with RemovalPolicy.DESTROY, let cdk destroy delete the table, the bucket and the logs', () => {
    tuned.template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Delete',
      Properties: Match.objectLike({ DeletionProtectionEnabled: false }),
    });
    tuned.template.hasResource('AWS::S3::Bucket', { DeletionPolicy: 'Delete' });
    tuned.template.resourceCountIs('Custom::S3AutoDeleteObjects', 1);
    for (const group of Object.values(tuned.template.findResources('AWS::Logs::LogGroup'))) {
      expect(group.DeletionPolicy).toBe('Delete');
    }
  });

  it('are refused at synth time, by the schema the functions use, when out of range', () => {
    const build = (props: ConstructorParameters<typeof FerryExecutor>[2]) => () =>
      new FerryExecutor(new Stack(new App(), 'Ferry'), 'Executor', props);
    expect(build({ jobLimits: { maxTimeout: Duration.days(30) } })).toThrow(/FERRY_MAX_TIMEOUT_SECONDS/);
    expect(build({ capacity: { maxConcurrentJobs: 0 } })).toThrow(/FERRY_MAX_CONCURRENCY/);
    expect(build({ images: { allow: ['a,b'] } })).toThrow(/images\.allow/);
    expect(build({ resultRetention: Duration.days(5000) })).toThrow(/FERRY_RETENTION_DAYS/);
    // The SQS event source accepts a maximum concurrency of 2 to 1000.
    expect(build({ dispatcherConcurrency: 1 })).toThrow(/dispatcherConcurrency/);
  });

  it('run as many dispatchers at once as asked', () => {
    tuned.template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      ScalingConfig: { MaximumConcurrency: 5 },
    });
  });

  it('let the execution role pull job images from the ECR repositories given', () => {
    const stack = new Stack(new App({ context: { 'aws:cdk:bundling-stacks': [] } }), 'Ferry');
    const repository = new Repository(stack, 'JobImages');
    const ferry = new FerryExecutor(stack, 'Executor', { images: { ecrRepositories: [repository] } });
    const template = Template.fromStack(stack);
    const id = (construct: IConstruct) => stack.getLogicalId(construct.node.defaultChild as CfnElement);
    const [pull] = allowing(statementsOf(template, id(ferry.taskExecutionRole)), 'ecr:BatchGetImage');
    expect(resourcesOf(pull ?? { Effect: '', Action: [], Resource: [] })).toContainEqual({
      'Fn::GetAtt': [id(repository), 'Arn'],
    });
  });

  it('grant callers execute-api:Invoke on this API', () => {
    const stack = new Stack(new App({ context: { 'aws:cdk:bundling-stacks': [] } }), 'Ferry');
    const ferry = new FerryExecutor(stack, 'Executor');
    const caller = new Role(stack, 'Caller', { assumedBy: new ServicePrincipal('lambda.amazonaws.com') });
    ferry.grantInvoke(caller);
    const template = Template.fromStack(stack);
    const id = (construct: IConstruct) => stack.getLogicalId(construct.node.defaultChild as CfnElement);
    const statements = statementsOf(template, id(caller));
    expect(statements.flatMap(actionsOf)).toEqual(['execute-api:Invoke']);
    expect(JSON.stringify(statements[0]?.Resource)).toContain(id(ferry.api));
  });
});
