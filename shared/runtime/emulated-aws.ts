// The emulated AWS deployment: what `cdk deploy` ships, run on one machine. The synthesized
// template's resources are created on the AWS API emulator (moto, or LocalStack for some
// services); the bundled functions run in emulated Lambda environments with the settings and
// roles the template gives them; an HTTP API front takes SigV4-signed calls as the deployed
// HTTP API does; an SQS event source polls the dispatch queue; EventBridge rules deliver ECS
// task state changes and the sweeper's schedule; and every RunTask is realised as real
// containers on the local Docker Engine. Every AWS call a function or a task makes passes
// through one endpoint that checks it against the caller's IAM policies and records it.
import { randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateSecurityGroupCommand, DescribeSubnetsCommand, EC2Client } from '@aws-sdk/client-ec2';
import { CreateClusterCommand, ECSClient } from '@aws-sdk/client-ecs';
import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { CreateQueueCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type Docker from 'dockerode';
import { AwsGateway, type Principal, type RecordedCall } from '../adapters/emulated/aws-gateway.ts';
import { type BusRule, EmulatedEventBus } from '../adapters/emulated/event-bus.ts';
import { FargateRealiser, type TaskStateChange } from '../adapters/emulated/fargate-tasks.ts';
import { EmulatedHttpApi } from '../adapters/emulated/http-api.ts';
import { checkAuthorization } from '../adapters/emulated/iam-check.ts';
import { EmulatedFunction, type InvokeOutcome } from '../adapters/emulated/lambda-runtime.ts';
import { rateMs } from '../adapters/emulated/schedule.ts';
import { verifySignature } from '../adapters/emulated/sigv4-verify.ts';
import { SqsPoller } from '../adapters/emulated/sqs-poller.ts';
import {
  type DeploymentModel,
  type FunctionModel,
  type Physical,
  type PolicyDocument,
  physicalNames,
  Resolver,
  readAssembly,
  rolePolicies,
} from '../adapters/emulated/template.ts';
import type { Logger } from '../logger.ts';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** moto's default account; LocalStack takes a twelve-digit access key as the account. */
const ACCOUNT = '123456789012';
const REGION = 'us-east-1';
/** Fargate's task launch rate quota, per account and region (its throttling documentation). */
const FARGATE_LAUNCH_RATE = { burst: 100, perSecond: 20 };
/** What the emulator's own clients, and the gateway passing calls on, sign with. */
const EMULATOR_KEY = { accessKeyId: ACCOUNT, secretAccessKey: 'test' };

/** The emulator's own clients: they provision and stand in for AWS services themselves. */
interface InternalClientConfig {
  readonly region: string;
  readonly endpoint: string;
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  readonly forcePathStyle: boolean;
  readonly maxAttempts: number;
}

export interface EmulatedAwsOptions {
  /** A cloud assembly written by `cdk synth` with bundling on (one stack). */
  readonly assemblyDir: string;
  /** Where the emulator of each service answers (by SigV4 signing name); `default` for the rest. */
  readonly endpoints: { readonly default: string } & Readonly<Partial<Record<string, string>>>;
  /** Realise RunTask as containers on this engine; without it, tasks stay PROVISIONING. */
  readonly docker?: Docker;
  /** The local image that stands in for the runner image asset (built offline). */
  readonly runnerImage?: string;
  /** The HTTP API's port on 127.0.0.1 (default: a free one). */
  readonly apiPort?: number;
  /** Run the sweeper on its schedule (default); tests may prefer to call `sweep()`. */
  readonly sweepOnSchedule?: boolean;
  /** Long-poll wait of the SQS event source, in seconds (Lambda: 20). */
  readonly pollWaitSeconds?: number;
  /**
   * Fargate's task launch rate: by default its quota (a bucket of 100 launches refilled at 20 a
   * second, per account and region); 'unlimited' lifts it.
   */
  readonly launchRate?: { readonly burst: number; readonly perSecond: number } | 'unlimited';
  /** EventBridge's wait before each retry of a failed delivery, in ms (doubling). */
  readonly retryBaseMs?: number;
  readonly log: Logger;
  /** Each line the functions write. */
  readonly functionLog?: (functionName: string, line: string) => void;
}

/** An event EventBridge is about to deliver; a test can drop, repeat or reorder it. */
export interface TaskEvent {
  readonly id: string;
  readonly detail: TaskStateChange;
}

export interface Caller {
  readonly name: string;
  readonly arn: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

export interface FunctionRole {
  readonly logicalId: string;
  readonly name: string;
  readonly principal: Principal;
}

export class EmulatedAwsDeployment {
  /** Each delivery of a task state change passes here first: return the events to deliver. */
  taskEventFilter: (event: TaskEvent) => TaskEvent[] = (event) => [event];
  private clockOffsetMs = 0;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly deliveries = new Set<Promise<void>>();
  readonly deadLetters: { readonly target: string; readonly event: unknown }[] = [];

  private constructor(
    readonly model: DeploymentModel,
    readonly resolver: Resolver,
    readonly physical: ReadonlyMap<string, Physical>,
    readonly gateway: AwsGateway,
    readonly httpApi: EmulatedHttpApi,
    readonly functions: ReadonlyMap<string, EmulatedFunction>,
    readonly roles: ReadonlyMap<string, Principal>,
    readonly pollers: readonly SqsPoller[],
    readonly realiser: FargateRealiser | undefined,
    private readonly bus: EmulatedEventBus,
    private readonly internal: { readonly sqs: SQSClient },
    private readonly options: EmulatedAwsOptions,
  ) {}

  static async start(options: EmulatedAwsOptions): Promise<EmulatedAwsDeployment> {
    const model = readAssembly(options.assemblyDir);
    const deploymentId = randomBytes(4).toString('hex');
    const pseudo = { accountId: ACCOUNT, region: REGION, stackName: `ferry-${deploymentId}` };
    const upstream = (service: string) => options.endpoints[service] ?? options.endpoints.default;
    const internalConfig = (service: string): InternalClientConfig => ({
      region: REGION,
      endpoint: upstream(service),
      credentials: EMULATOR_KEY,
      forcePathStyle: true,
      maxAttempts: 3,
    });

    // The gateway first: queue URLs name its address, so functions reach SQS through it.
    const bucketPolicies = new Map<string, PolicyDocument>();
    const queueArnOf = (url: string) => `arn:aws:sqs:${REGION}:${ACCOUNT}:${url.split('/').pop() ?? ''}`;
    const gateway = new AwsGateway({
      upstream,
      emulatorKey: EMULATOR_KEY,
      lookup: { accountId: ACCOUNT, region: REGION, queueArn: queueArnOf },
      ...(options.launchRate === 'unlimited'
        ? {}
        : { launchRate: options.launchRate ?? FARGATE_LAUNCH_RATE }),
      resourcePolicy: (arn) => bucketPolicies.get(arn),
      log: options.log,
    });
    const gatewayUrl = await gateway.listen();

    const given = await provisionNetwork(new EC2Client(internalConfig('ec2')), model, deploymentId);
    const names = physicalNames(model.template, pseudo, `ferry-${deploymentId}`, given);
    for (const [id] of model.resourcesOfType('AWS::SQS::Queue')) {
      const name = names.get(id)?.attributes?.QueueName ?? id;
      names.set(id, { ...(names.get(id) as Physical), ref: `${gatewayUrl}/${ACCOUNT}/${name}` });
    }
    const resolver = new Resolver(names, pseudo);

    await provisionResources(model, resolver, names, internalConfig, bucketPolicies);

    // Every role becomes a principal with keys of its own.
    const roles = new Map<string, Principal>();
    const runs = new Set([
      ...model.functions.map((f) => f.roleLogicalId),
      ...model
        .resourcesOfType('AWS::IAM::Role')
        .map(([id]) => id)
        .filter((id) => /Task/.test(id)),
    ]);
    for (const [id] of model.resourcesOfType('AWS::IAM::Role')) {
      // Roles of what the emulator does not run (custom resources, flow logs) need no keys.
      if (!runs.has(id)) continue;
      const principal: Principal = {
        name: id,
        principalArn: names.get(id)?.attributes?.Arn ?? id,
        accountId: ACCOUNT,
        policies: rolePolicies(model, id, resolver),
        accessKeyId: `ASIA${randomBytes(8).toString('hex').toUpperCase()}`,
        secretAccessKey: randomBytes(20).toString('base64'),
        sessionToken: randomBytes(24).toString('base64'),
      };
      roles.set(id, principal);
      gateway.addPrincipal(principal);
    }

    // The HTTP API in front of the api function: SigV4 checked, then execute-api:Invoke.
    const [apiId] = model.resourcesOfType('AWS::ApiGatewayV2::Api')[0] ?? [];
    const integration = model.resourcesOfType('AWS::ApiGatewayV2::Integration')[0]?.[1];
    const apiFunctionArn = resolver.resolveString(integration?.Properties?.IntegrationUri, 'IntegrationUri');
    if (apiId === undefined) throw new Error('the stack has no HTTP API');
    const apiTarget: { current?: EmulatedFunction } = {};
    const httpApiId = names.get(apiId)?.ref ?? apiId;
    const httpApi = new EmulatedHttpApi({
      apiId: httpApiId,
      region: REGION,
      log: options.log,
      invoke: (event) =>
        apiTarget.current?.invoke(event) ??
        Promise.resolve({ ok: false, error: { errorType: 'Emulator.NotReady', errorMessage: 'starting' } }),
      authorize: async (request) => {
        const started = performance.now();
        const verification = await verifySignature(request, (key) => gateway.principalFor(key));
        if (!verification.ok) return { ok: false, message: verification.message };
        const caller = gateway.principalFor(verification.signature.accessKeyId) as Principal;
        const resource = request.routeArn.replace(':*:', `:${ACCOUNT}:`);
        const verdict = await checkAuthorization(caller, {
          action: 'execute-api:Invoke',
          resource,
          context: {},
        });
        gateway.calls.push({
          principal: caller.name,
          service: 'execute-api',
          operation: `${request.method} ${request.url.split('?')[0]}`,
          authorizations: [{ action: 'execute-api:Invoke', resource, context: {}, ...verdict }],
          status: verdict.allowed ? 200 : 403,
          at: new Date().toISOString(),
          durationMs: performance.now() - started,
        });
        if (!verdict.allowed) {
          return {
            ok: false,
            message: `User: ${caller.principalArn} is not authorized to perform: execute-api:Invoke on resource: ${resource}`,
          };
        }
        return {
          ok: true,
          caller: {
            arn: caller.principalArn,
            accessKey: caller.accessKeyId,
            accountId: ACCOUNT,
            userId: `AIDA${caller.name.toUpperCase().replace(/[^A-Z0-9]/g, '')}`,
          },
        };
      },
    });
    await httpApi.listen(options.apiPort ?? 0);
    // Its public address, as CDK's HttpApi.url gives it, stands for the emulated front.
    const publicApiUrl = `https://${httpApiId}.execute-api.${REGION}.amazonaws.com`;
    const addresses = new Map([[publicApiUrl, httpApi.url]]);

    // The functions, each under its own role, talking to AWS through the gateway.
    const deployment: { current?: EmulatedAwsDeployment } = {};
    const functions = new Map<string, EmulatedFunction>();
    const mappings = model.resourcesOfType('AWS::Lambda::EventSourceMapping');
    for (const fn of model.functions) {
      const role = roles.get(fn.roleLogicalId);
      if (role === undefined) throw new Error(`${fn.logicalId}: its role ${fn.roleLogicalId} is missing`);
      const mapping = mappings.find(([, m]) => refOf(m.Properties?.FunctionName) === fn.logicalId);
      const scaling = mapping?.[1].Properties?.ScalingConfig as { MaximumConcurrency?: number } | undefined;
      functions.set(
        fn.logicalId,
        new EmulatedFunction({
          name: names.get(fn.logicalId)?.ref ?? fn.logicalId,
          arn: names.get(fn.logicalId)?.attributes?.Arn ?? fn.logicalId,
          entry: path.join(fn.codeDir, 'index.mjs'),
          exportName: fn.handlerExport,
          environment: functionEnvironment(fn, resolver, role, gatewayUrl, addresses),
          timeoutSeconds: fn.timeoutSeconds,
          memoryMiB: fn.memoryMiB,
          maxConcurrency: scaling?.MaximumConcurrency ?? 10,
          log: options.functionLog ?? (() => undefined),
          clockOffsetMs: () => deployment.current?.clockOffsetMs ?? 0,
        }),
      );
    }

    // The SQS event sources, polling with their function's role.
    const pollers: SqsPoller[] = [];
    for (const [, mapping] of mappings) {
      const p = mapping.Properties ?? {};
      const fnId = refOf(p.FunctionName);
      const fn = fnId === undefined ? undefined : functions.get(fnId);
      const fnModel = model.functions.find((f) => f.logicalId === fnId);
      const role = fnModel === undefined ? undefined : roles.get(fnModel.roleLogicalId);
      const queueArn = resolver.resolveString(p.EventSourceArn, 'EventSourceArn');
      const queueId = [...names].find(([, n]) => n.attributes?.Arn === queueArn)?.[0];
      if (fn === undefined || role === undefined || queueId === undefined) {
        throw new Error('an event source mapping names a function or queue the emulator did not create');
      }
      pollers.push(
        new SqsPoller({
          queueUrl: names.get(queueId)?.ref ?? '',
          queueArn,
          region: REGION,
          sqs: new SQSClient({
            region: REGION,
            endpoint: gatewayUrl,
            credentials: {
              accessKeyId: role.accessKeyId,
              secretAccessKey: role.secretAccessKey,
              sessionToken: role.sessionToken ?? '',
            },
            maxAttempts: 3,
          }),
          batchSize: Number(p.BatchSize ?? 10),
          maxConcurrency:
            (p.ScalingConfig as { MaximumConcurrency?: number } | undefined)?.MaximumConcurrency ?? 5,
          reportBatchItemFailures: ((p.FunctionResponseTypes as string[] | undefined) ?? []).includes(
            'ReportBatchItemFailures',
          ),
          waitSeconds: options.pollWaitSeconds ?? 1,
          invoke: (event) => fn.invoke(event),
          log: options.log,
        }),
      );
    }

    const apiFunction = [...functions.values()].find((f) => f.settings.arn === apiFunctionArn);
    if (apiFunction === undefined) throw new Error('the HTTP API integrates no function of the stack');
    apiTarget.current = apiFunction;

    // ECS: RunTask becomes containers, whose changes become EventBridge events.
    let realiser: FargateRealiser | undefined;
    if (options.docker !== undefined) {
      realiser = new FargateRealiser({
        docker: options.docker,
        labels: { 'ferry.emulated': deploymentId },
        log: options.log,
        emit: (detail) => deployment.current?.taskStateChanged(detail),
        environment: (task) => {
          const role = [...roles.values()].find((r) => r.principalArn === task.taskRoleArn);
          return {
            AWS_REGION: REGION,
            AWS_DEFAULT_REGION: REGION,
            AWS_ENDPOINT_URL: gatewayUrl,
            ...(role === undefined
              ? {}
              : { AWS_CONTAINER_CREDENTIALS_FULL_URI: gateway.credentialsUrl(role) }),
          };
        },
      });
      if (options.runnerImage !== undefined) {
        const runnerUri = resolver.resolveString(
          model.functions[0]?.environment.FERRY_RUNNER_IMAGE,
          'FERRY_RUNNER_IMAGE',
        );
        await tagImage(options.docker, options.runnerImage, runnerUri);
      }
      gateway.realiseTasksWith(realiser);
    }

    // EventBridge: the stack's rules with a pattern, on the emulator's own bus.
    const bus = await EmulatedEventBus.create({
      eventbridge: new EventBridgeClient(internalConfig('events')),
      sqs: new SQSClient(internalConfig('sqs')),
      prefix: `ferry-${deploymentId}`,
      rules: model
        .resourcesOfType('AWS::Events::Rule')
        .filter(([, rule]) => rule.Properties?.EventPattern !== undefined)
        .map(
          ([id, rule]): BusRule => ({
            logicalId: id,
            pattern: resolver.resolve(rule.Properties?.EventPattern as Json),
            targets: (rule.Properties?.Targets as Record<string, Json>[] | undefined) ?? [],
          }),
        ),
      deliver: async (target, event) => deployment.current?.received(target, event),
      waitSeconds: options.pollWaitSeconds ?? 1,
      log: options.log,
    });

    const created = new EmulatedAwsDeployment(
      model,
      resolver,
      names,
      gateway,
      httpApi,
      functions,
      roles,
      pollers,
      realiser,
      bus,
      { sqs: new SQSClient(internalConfig('sqs')) },
      options,
    );
    deployment.current = created;
    bus.start();
    for (const poller of pollers) poller.start();
    if (options.sweepOnSchedule !== false) created.scheduleSweeps();
    return created;
  }

  get apiUrl(): string {
    return this.httpApi.url;
  }

  get calls(): readonly RecordedCall[] {
    return this.gateway.calls;
  }

  /** RunTask calls refused because they came faster than Fargate's launch rate. */
  get throttledLaunches(): number {
    return this.gateway.throttledLaunches;
  }

  /** The function whose logical id matches, e.g. /Dispatcher/. */
  fn(pattern: RegExp): EmulatedFunction {
    const found = [...this.functions].find(([id]) => pattern.test(id))?.[1];
    if (found === undefined) throw new Error(`no function matches ${pattern}`);
    return found;
  }

  /** The role whose logical id matches, e.g. /TaskRole/. */
  role(pattern: RegExp): Principal {
    const found = [...this.roles].find(([id]) => pattern.test(id))?.[1];
    if (found === undefined) throw new Error(`no role matches ${pattern}`);
    return found;
  }

  /** The physical name (Ref) of the resource whose logical id matches. */
  ref(pattern: RegExp): string {
    const found = [...this.physical].find(([id]) => pattern.test(id))?.[1];
    if (found === undefined) throw new Error(`no resource matches ${pattern}`);
    return found.ref;
  }

  /**
   * A caller with its own access key, allowed to invoke the API as `FerryExecutor.grantInvoke`
   * allows a user; `allow: false` gives one with no grant at all.
   */
  addCaller(name: string, allow = true): Caller {
    const apiId = this.httpApi.url === '' ? '*' : this.httpApiId();
    return this.addUser(
      name,
      allow
        ? [
            {
              Effect: 'Allow',
              Action: 'execute-api:Invoke',
              Resource: `arn:aws:execute-api:${REGION}:${ACCOUNT}:${apiId}/*`,
            },
          ]
        : [],
    );
  }

  /**
   * An IAM user of the account with the given policy statements, e.g. an operator who may stop
   * tasks; it calls AWS at `awsEndpoint`.
   */
  addUser(name: string, statements: readonly Record<string, Json>[]): Caller {
    const arn = `arn:aws:iam::${ACCOUNT}:user/${name}`;
    const principal: Principal = {
      name: `user/${name}`,
      principalArn: arn,
      accountId: ACCOUNT,
      policies:
        statements.length === 0
          ? []
          : [
              {
                name: 'inline',
                document: { Version: '2012-10-17', Statement: statements } as unknown as PolicyDocument,
              },
            ],
      accessKeyId: `AKIA${randomBytes(8).toString('hex').toUpperCase()}`,
      secretAccessKey: randomBytes(20).toString('base64'),
    };
    this.gateway.addPrincipal(principal);
    return { name, arn, accessKeyId: principal.accessKeyId, secretAccessKey: principal.secretAccessKey };
  }

  /** The AWS endpoint functions, tasks and users of the deployment call (IAM checked). */
  get awsEndpoint(): string {
    return this.gateway.url;
  }

  /** Moves the functions' clocks forward (deadlines, bid expiry, "30 s after" checks). */
  advanceClock(ms: number): void {
    this.clockOffsetMs += ms;
  }

  /** Runs the sweeper now, as its schedule would. */
  async sweep(): Promise<InvokeOutcome> {
    const target = this.scheduledTarget();
    return target.invoke(this.scheduledEvent(target.settings.arn));
  }

  /** Waits until every event put on the bus has been delivered (retries included) or dropped. */
  async eventsSettled(): Promise<void> {
    for (;;) {
      if (this.deliveries.size > 0) {
        await Promise.allSettled([...this.deliveries]);
        continue;
      }
      if (!(await this.bus.busy()) && this.deliveries.size === 0) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async close(): Promise<void> {
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    await Promise.all(this.pollers.map((p) => p.stop()));
    await this.realiser?.close();
    await this.eventsSettled().catch(() => undefined);
    await this.bus.close();
    await this.httpApi.close();
    await Promise.all([...this.functions.values()].map((f) => f.close()));
    await this.gateway.close();
  }

  private httpApiId(): string {
    const [apiId] = this.model.resourcesOfType('AWS::ApiGatewayV2::Api')[0] ?? [];
    return apiId === undefined ? '*' : (this.physical.get(apiId)?.ref ?? '*');
  }

  private scheduleSweeps(): void {
    const rule = this.model
      .resourcesOfType('AWS::Events::Rule')
      .find(([, r]) => typeof r.Properties?.ScheduleExpression === 'string');
    if (rule === undefined) return;
    const every = rateMs(String(rule[1].Properties?.ScheduleExpression));
    const target = this.scheduledTarget();
    this.sweepTimer = setInterval(() => {
      void target.invoke(this.scheduledEvent(target.settings.arn)).then((outcome) => {
        if (!outcome.ok) this.options.log.warn('a scheduled sweep failed', { error: outcome.error });
      });
    }, every);
    this.sweepTimer.unref();
  }

  private scheduledTarget(): EmulatedFunction {
    const rule = this.model
      .resourcesOfType('AWS::Events::Rule')
      .find(([, r]) => typeof r.Properties?.ScheduleExpression === 'string');
    const arn = this.resolver.resolveString(
      ((rule?.[1].Properties?.Targets as Json[] | undefined)?.[0] as { Arn?: Json } | undefined)?.Arn,
      'schedule target',
    );
    const target = [...this.functions.values()].find((f) => f.settings.arn === arn);
    if (target === undefined) throw new Error('the sweep schedule targets no function of the stack');
    return target;
  }

  private scheduledEvent(ruleTarget: string) {
    return {
      version: '0',
      id: randomUUID(),
      'detail-type': 'Scheduled Event',
      source: 'aws.events',
      account: ACCOUNT,
      time: new Date(Date.now() + this.clockOffsetMs).toISOString().replace(/\.\d+Z$/, 'Z'),
      region: REGION,
      resources: [ruleTarget],
      detail: {},
    };
  }

  /** ECS reported a change: it goes on the default bus, whose rules decide who receives it. */
  private taskStateChanged(detail: TaskStateChange): void {
    this.bus.put({
      Source: 'aws.ecs',
      DetailType: 'ECS Task State Change',
      Time: new Date(detail.updatedAt),
      Resources: [detail.taskArn],
      Detail: JSON.stringify(detail),
    });
  }

  /** The bus matched an event to a target: `taskEventFilter` may drop, repeat or hold it. */
  private received(target: Record<string, Json>, event: Record<string, Json>): void {
    const events =
      event['detail-type'] === 'ECS Task State Change'
        ? this.taskEventFilter({
            id: String(event.id),
            detail: event.detail as unknown as TaskStateChange,
          }).map((each) => ({ ...event, id: each.id, detail: each.detail as unknown as Json }))
        : [event];
    for (const each of events) {
      const delivery = this.deliver(target, each)
        .catch((error: unknown) => this.options.log.error('an event delivery failed', { error }))
        .finally(() => this.deliveries.delete(delivery));
      this.deliveries.add(delivery);
    }
  }

  /** EventBridge's delivery: retries with backoff per the target's policy, then its dead-letter queue. */
  private async deliver(target: Record<string, Json>, event: unknown): Promise<void> {
    const arn = this.resolver.resolveString(target.Arn, 'rule target');
    const fn = [...this.functions.values()].find((f) => f.settings.arn === arn);
    if (fn === undefined) throw new Error(`rule target ${arn} is not a function of the stack`);
    const policy = (target.RetryPolicy ?? {}) as { MaximumRetryAttempts?: number };
    const attempts = 1 + (policy.MaximumRetryAttempts ?? 185);
    let wait = this.options.retryBaseMs ?? 200;
    let last: InvokeOutcome | undefined;
    for (let attempt = 1; attempt <= attempts; attempt += 1) {
      last = await fn.invoke(event);
      if (last.ok) return;
      this.options.log.warn('an event delivery failed; EventBridge retries it', {
        target: arn,
        attempt,
        error: last.error,
      });
      if (attempt < attempts) {
        await new Promise((resolve) => setTimeout(resolve, wait));
        wait = Math.min(wait * 2, 5_000);
      }
    }
    this.options.log.warn('an event was not delivered; it goes to the dead-letter queue', {
      target: arn,
      error: last?.ok === false ? last.error : undefined,
    });
    this.deadLetters.push({ target: arn, event });
    const dlq = (target.DeadLetterConfig as { Arn?: Json } | undefined)?.Arn;
    if (dlq !== undefined) {
      const dlqArn = this.resolver.resolveString(dlq, 'dead-letter queue');
      const queueId = [...this.physical].find(([, n]) => n.attributes?.Arn === dlqArn)?.[0];
      const url = queueId === undefined ? undefined : this.physical.get(queueId)?.ref;
      if (url !== undefined) {
        await this.internal.sqs.send(
          new SendMessageCommand({ QueueUrl: url, MessageBody: JSON.stringify(event) }),
        );
      }
    }
  }
}

function refOf(value: unknown): string | undefined {
  return (value as { Ref?: string } | undefined)?.Ref;
}

/** What Lambda puts in a function's environment, beside the template's own variables. */
function functionEnvironment(
  fn: FunctionModel,
  resolver: Resolver,
  role: Principal,
  gatewayUrl: string,
  /** Public addresses of the stack's endpoints, and where the emulator serves them. */
  addresses: ReadonlyMap<string, string>,
): Record<string, string> {
  const environment: Record<string, string> = {};
  for (const [name, value] of Object.entries(fn.environment)) {
    const resolved = resolver.resolveString(value, `${fn.logicalId} ${name}`);
    const served = [...addresses].find(([address]) => resolved.startsWith(address));
    environment[name] = served === undefined ? resolved : served[1] + resolved.slice(served[0].length);
  }
  return {
    ...environment,
    AWS_REGION: REGION,
    AWS_DEFAULT_REGION: REGION,
    AWS_ACCESS_KEY_ID: role.accessKeyId,
    AWS_SECRET_ACCESS_KEY: role.secretAccessKey,
    AWS_SESSION_TOKEN: role.sessionToken ?? '',
    AWS_ENDPOINT_URL: gatewayUrl,
  };
}

/** The emulator's default VPC stands in for the subnets and security group the stack creates. */
async function provisionNetwork(
  ec2: EC2Client,
  model: DeploymentModel,
  deploymentId: string,
): Promise<Map<string, Physical>> {
  const subnets = await ec2.send(
    new DescribeSubnetsCommand({ Filters: [{ Name: 'default-for-az', Values: ['true'] }] }),
  );
  const available = subnets.Subnets ?? [];
  if (available.length === 0) throw new Error('the AWS emulator has no default subnets');
  const given = new Map<string, Physical>();
  model.resourcesOfType('AWS::EC2::Subnet').forEach(([id], i) => {
    const subnet = available[i % available.length];
    given.set(id, { ref: subnet?.SubnetId ?? '', attributes: {} });
  });
  for (const [id] of model.resourcesOfType('AWS::EC2::SecurityGroup')) {
    const group = await ec2.send(
      new CreateSecurityGroupCommand({
        GroupName: `ferry-${deploymentId}-${id}`.slice(0, 255),
        Description: 'Ferry tasks',
        VpcId: available[0]?.VpcId,
      }),
    );
    given.set(id, { ref: group.GroupId ?? '', attributes: { GroupId: group.GroupId ?? '' } });
  }
  return given;
}

/** Creates the stack's table, bucket, queues and cluster on the emulators, as CloudFormation would. */
async function provisionResources(
  model: DeploymentModel,
  resolver: Resolver,
  names: ReadonlyMap<string, Physical>,
  config: (service: string) => InternalClientConfig,
  bucketPolicies: Map<string, PolicyDocument>,
): Promise<void> {
  const dynamodb = new DynamoDBClient(config('dynamodb'));
  for (const [id, table] of model.resourcesOfType('AWS::DynamoDB::Table')) {
    const p = resolver.resolve((table.Properties ?? {}) as Json) as Record<string, Json>;
    await dynamodb.send(
      new CreateTableCommand({
        TableName: names.get(id)?.ref,
        KeySchema: p.KeySchema as never,
        AttributeDefinitions: p.AttributeDefinitions as never,
        GlobalSecondaryIndexes: p.GlobalSecondaryIndexes as never,
        BillingMode: (p.BillingMode as 'PAY_PER_REQUEST' | undefined) ?? 'PAY_PER_REQUEST',
      }),
    );
  }
  const s3 = new S3Client(config('s3'));
  for (const [id] of model.resourcesOfType('AWS::S3::Bucket')) {
    await s3.send(new CreateBucketCommand({ Bucket: names.get(id)?.ref }));
  }
  for (const [, policy] of model.resourcesOfType('AWS::S3::BucketPolicy')) {
    const bucket = resolver.resolveString(policy.Properties?.Bucket, 'BucketPolicy.Bucket');
    bucketPolicies.set(
      `arn:aws:s3:::${bucket}`,
      resolver.resolve(policy.Properties?.PolicyDocument ?? null) as unknown as PolicyDocument,
    );
  }
  // Queues without a redrive policy first: the others name them.
  const sqs = new SQSClient(config('sqs'));
  const queues = model
    .resourcesOfType('AWS::SQS::Queue')
    .sort(
      ([, a], [, b]) =>
        Number(a.Properties?.RedrivePolicy !== undefined) - Number(b.Properties?.RedrivePolicy !== undefined),
    );
  for (const [id, queue] of queues) {
    const p = resolver.resolve((queue.Properties ?? {}) as Json) as Record<string, Json>;
    const attributes: Record<string, string> = {};
    for (const key of [
      'VisibilityTimeout',
      'MessageRetentionPeriod',
      'DelaySeconds',
      'ReceiveMessageWaitTimeSeconds',
    ]) {
      if (p[key] !== undefined) attributes[key] = String(p[key]);
    }
    if (p.RedrivePolicy !== undefined) attributes.RedrivePolicy = JSON.stringify(p.RedrivePolicy);
    await sqs.send(
      new CreateQueueCommand({ QueueName: names.get(id)?.attributes?.QueueName, Attributes: attributes }),
    );
  }
  const ecs = new ECSClient(config('ecs'));
  for (const [id] of model.resourcesOfType('AWS::ECS::Cluster')) {
    await ecs.send(
      new CreateClusterCommand({
        clusterName: names.get(id)?.ref,
        capacityProviders: ['FARGATE', 'FARGATE_SPOT'],
      }),
    );
  }
}

/** The runner image asset's ECR URI, as the engine would hold it after a pull. */
async function tagImage(docker: Docker, local: string, uri: string): Promise<void> {
  const at = uri.lastIndexOf(':');
  const [repo, tag] = at > uri.lastIndexOf('/') ? [uri.slice(0, at), uri.slice(at + 1)] : [uri, 'latest'];
  await docker.getImage(local).tag({ repo, tag });
}
