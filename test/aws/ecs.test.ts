// The Fargate backend against the emulator's ECS: one task definition per image, looked up
// before it is registered; RunTask carrying the execution's size, command and environment;
// StopTask and DescribeTasks as cancel and the sweeper use them.
import {
  DescribeTaskDefinitionCommand,
  DescribeTasksCommand,
  ECSClient,
  ListTaskDefinitionsCommand,
  ListTasksCommand,
  RegisterTaskDefinitionCommand,
  RunTaskCommand,
  type Task,
} from '@aws-sdk/client-ecs';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { EcsBackend } from '../../shared/adapters/aws/ecs-backend.ts';
import { executionIds } from '../../shared/adapters/system.ts';
import type { AwsSettings } from '../../shared/config.ts';
import { fargateProfile, type PlatformProfile, resolveConstraints } from '../../shared/domain/bidding.ts';
import type { Execution, ResolvedConstraints } from '../../shared/domain/execution.ts';
import type { TaskDefinitionRules } from '../../shared/domain/fargate-rules.ts';
import { parseJobSpec } from '../../shared/domain/job-spec.ts';
import { BackendError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import { type AwsEnvironment, awsConfig, clientConfig, createAwsEnvironment } from '../support/aws.ts';
import { ticket } from '../support/fixtures.ts';
import {
  ecsError,
  enforceFargateRules,
  FaultInjector,
  type RecordedCall,
  recordCalls,
} from '../support/sdk-faults.ts';

const FARGATE: PlatformProfile = fargateProfile(true);

const ids = executionIds();

/** An execution as the dispatcher hands it to the backend: bid on for Fargate, LAUNCHING. */
function launching(specInput: Record<string, unknown>): {
  execution: Execution;
  constraints: ResolvedConstraints;
} {
  const spec = parseJobSpec(specInput);
  const fit = resolveConstraints(spec, FARGATE);
  if (!fit.fits) throw new Error(fit.reason);
  const at = new Date().toISOString();
  const execution: Execution = {
    id: ids.next(),
    owner: 'arn:aws:iam::123456789012:user/alice',
    state: 'LAUNCHING',
    version: 3,
    spec,
    bid: { accepted: true, reason: 'fits', constraints: fit.constraints },
    createdAt: at,
    updatedAt: at,
    queuedAt: at,
    launchedAt: at,
    deferrals: 0,
    history: [],
  };
  return { execution, constraints: fit.constraints };
}

describe('ECS Fargate backend', () => {
  let aws: AwsEnvironment;
  let settings: AwsSettings;
  // moto takes task definitions and RunTask requests that Fargate refuses: every one the
  // backend sends is held to Fargate's rules, and a suite that broke one fails.
  const violations: string[] = [];
  const registered = new Map<string, TaskDefinitionRules>();
  const checkedClient = (): ECSClient => {
    const client = new ECSClient(clientConfig('ecs'));
    enforceFargateRules(client, violations, registered);
    return client;
  };

  afterEach(() => {
    // Emptied first, so one test's violations are not blamed on the next.
    expect(violations.splice(0)).toEqual([]);
  });

  /** A backend as a freshly started dispatcher builds it, with its own client. */
  function coldBackend(client: ECSClient = checkedClient()): EcsBackend {
    return new EcsBackend({ ...settings, client, log: silentLogger, sleep: async () => undefined });
  }

  /** A cold backend whose ECS calls are recorded. */
  function countedBackend(): { backend: EcsBackend; calls: RecordedCall[] } {
    const client = checkedClient();
    const calls = recordCalls(client, []);
    return { backend: coldBackend(client), calls };
  }

  const operations = (calls: readonly RecordedCall[]) => calls.map((c) => c.operation);

  async function describeTask(taskArn: string): Promise<Task> {
    const reply = await aws.clients.ecs.send(
      new DescribeTasksCommand({ cluster: aws.cluster, tasks: [taskArn], include: ['TAGS'] }),
    );
    const task = reply.tasks?.[0];
    if (task === undefined) throw new Error(`ECS does not know ${taskArn}`);
    return task;
  }

  beforeAll(async () => {
    aws = await createAwsEnvironment();
    const config = awsConfig(aws).aws;
    if (config === undefined) throw new Error('the test environment has no AWS settings');
    settings = config;
  });

  it('registers the task definition of an image once, and finds it on a cold start', async () => {
    const image = 'public.ecr.aws/docker/library/alpine:3.20';
    const first = countedBackend();

    const a = launching({ image, command: ['true'] });
    await first.backend.launch(a.execution, a.constraints, ticket());
    const b = launching({ image, command: ['false'] });
    await first.backend.launch(b.execution, b.constraints, ticket());

    expect(operations(first.calls)).toEqual([
      'DescribeTaskDefinition',
      'RegisterTaskDefinition',
      'RunTask',
      // warm: the definition is remembered
      'RunTask',
    ]);

    const cold = countedBackend();
    const c = launching({ image, command: ['true'] });
    await cold.backend.launch(c.execution, c.constraints, ticket());

    expect(operations(cold.calls)).toEqual(['DescribeTaskDefinition', 'RunTask']);
    const family = cold.backend.taskDefinitionFor(image).family;
    const revisions = await aws.clients.ecs.send(new ListTaskDefinitionsCommand({ familyPrefix: family }));
    expect(revisions.taskDefinitionArns).toHaveLength(1);
  });

  it('gives another image another family', async () => {
    const { backend, calls } = countedBackend();
    const busybox = backend.taskDefinitionFor('public.ecr.aws/docker/library/busybox:1.36').family;
    const alpine = backend.taskDefinitionFor('public.ecr.aws/docker/library/alpine:3.20').family;
    expect(busybox).not.toBe(alpine);
    expect(busybox).toMatch(/^ferry-[0-9a-f]{20}$/);

    const arn = await backend.ensureTaskDefinition('public.ecr.aws/docker/library/busybox:1.36');

    expect(arn).toContain(`:task-definition/${busybox}:1`);
    expect(operations(calls)).toEqual(['DescribeTaskDefinition', 'RegisterTaskDefinition']);
  });

  it('registers a Fargate definition with the task anatomy, the roles and awsvpc networking', async () => {
    const image = 'public.ecr.aws/docker/library/python:3.12-slim';
    const arn = await coldBackend().ensureTaskDefinition(image);

    const { taskDefinition } = await aws.clients.ecs.send(
      new DescribeTaskDefinitionCommand({ taskDefinition: arn }),
    );

    expect(taskDefinition).toMatchObject({
      taskDefinitionArn: arn,
      status: 'ACTIVE',
      requiresCompatibilities: ['FARGATE'],
      networkMode: 'awsvpc',
      cpu: '256',
      memory: '512',
      taskRoleArn: settings.taskRoleArn,
      executionRoleArn: settings.executionRoleArn,
      runtimePlatform: { operatingSystemFamily: 'LINUX', cpuArchitecture: 'X86_64' },
    });
    // The anatomy: an init container hands the static wrapper over a shared volume, the
    // job's image runs through it, and the publisher (essential: it ends the task once the
    // result is stored) uploads the output.
    expect(taskDefinition?.volumes).toEqual([expect.objectContaining({ name: 'ferry' })]);
    const containers = taskDefinition?.containerDefinitions ?? [];
    expect(containers.map((c) => c.name)).toEqual(['ferry-init', 'job', 'ferry-publisher']);
    const [init, job, publisher] = containers;
    const shared = [{ sourceVolume: 'ferry', containerPath: '/ferry', readOnly: false }];
    const logs = (prefix: string) => ({
      logDriver: 'awslogs',
      options: {
        'awslogs-group': settings.logGroup,
        'awslogs-region': settings.region,
        'awslogs-stream-prefix': prefix,
      },
    });
    expect(init).toMatchObject({
      image: settings.runnerImage,
      essential: false,
      entryPoint: ['/opt/ferry/ferry-wrapper'],
      command: ['--init', '/ferry'],
      mountPoints: shared,
      logConfiguration: logs('ferry-init'),
    });
    expect(job).toMatchObject({
      image,
      essential: false,
      entryPoint: ['/ferry/bin/ferry-wrapper'],
      dependsOn: [{ containerName: 'ferry-init', condition: 'SUCCESS' }],
      mountPoints: shared,
      logConfiguration: logs('ferry-job'),
    });
    expect(publisher).toMatchObject({
      image: settings.runnerImage,
      essential: true,
      dependsOn: [{ containerName: 'ferry-init', condition: 'SUCCESS' }],
      mountPoints: shared,
      stopTimeout: 60,
      logConfiguration: logs('ferry-publisher'),
    });
    // The publisher asks Ferry's API for upload links: it is not even told the bucket.
    expect(publisher?.environment).toEqual([
      { name: 'FERRY_API_URL', value: settings.apiUrl },
      { name: 'FERRY_IO_DIR', value: '/ferry/io' },
    ]);
  });

  it('tells the publisher the bucket instead when tasks cannot reach the API', () => {
    const { apiUrl: _, ...withoutApi } = settings;
    const backend = new EcsBackend({ ...withoutApi, client: checkedClient(), log: silentLogger });

    const definition = backend.taskDefinitionFor('public.ecr.aws/docker/library/alpine:3.20');

    const publisher = definition.containerDefinitions?.find((c) => c.name === 'ferry-publisher');
    expect(publisher?.environment).toEqual([
      { name: 'FERRY_BUCKET', value: settings.bucket },
      { name: 'FERRY_IO_DIR', value: '/ferry/io' },
    ]);
  });

  it("runs the task with the execution's size, command and environment", async () => {
    const { execution, constraints } = launching({
      image: 'public.ecr.aws/docker/library/alpine:3.20',
      command: ['sh', '-c', 'echo "$GREETING" > /dev/stderr'],
      env: { GREETING: 'hello world', EMPTY: '' },
      resources: { cpu: 2, memory: '5GiB', disk: '50GiB' },
      labels: { team: 'data' },
    });

    const { uploadSecret } = ticket();
    const { taskId } = await coldBackend().launch(execution, constraints, { uploadSecret });

    const task = await describeTask(taskId);
    expect(task.taskArn).toBe(taskId);
    expect(task.startedBy).toBe(execution.id);
    expect(task.clusterArn).toBe(aws.cluster);
    expect(task.group).toBe('ferry');
    expect(task.capacityProviderName).toBe('FARGATE');
    expect(task.overrides).toEqual({
      cpu: '2048',
      memory: '5120',
      ephemeralStorage: { sizeInGiB: 50 },
      containerOverrides: [
        {
          name: 'job',
          command: [
            '--io',
            '/ferry/io',
            '--timeout',
            '3600',
            '--',
            'sh',
            '-c',
            'echo "$GREETING" > /dev/stderr',
          ],
          environment: [
            { name: 'GREETING', value: 'hello world' },
            { name: 'EMPTY', value: '' },
          ],
        },
        {
          name: 'ferry-publisher',
          environment: [
            { name: 'FERRY_EXECUTION_ID', value: execution.id },
            {
              name: 'FERRY_OUTPUT_LIMITS',
              // The streams' limits only: the job has no outputs (their limits would take room).
              value: JSON.stringify({
                stdoutBytes: execution.spec.outputLimits.stdoutBytes,
                stderrBytes: execution.spec.outputLimits.stderrBytes,
                inlineBytes: execution.spec.outputLimits.inlineBytes,
                keep: execution.spec.outputLimits.keep,
              }),
            },
            { name: 'FERRY_UPLOAD_SECRET', value: uploadSecret },
          ],
        },
      ],
    });
    // The publisher's alone: not the job's container, not a tag anyone may read.
    expect(JSON.stringify(task.overrides?.containerOverrides?.[0])).not.toContain(uploadSecret);
    expect(JSON.stringify(task.tags)).not.toContain(uploadSecret);
    expect(task.tags).toEqual(
      expect.arrayContaining([
        { key: 'ferry:execution', value: execution.id },
        { key: 'ferry:label:team', value: 'data' },
      ]),
    );
    const eni = task.attachments?.find((a) => a.type === 'ElasticNetworkInterface');
    expect(eni?.details).toEqual(expect.arrayContaining([{ name: 'subnetId', value: settings.subnets[0] }]));
  });

  it('sends a command near the overrides limit whole, as the bid accepted it', async () => {
    const long = 'a'.repeat(7600);
    const { execution, constraints } = launching({
      image: 'public.ecr.aws/docker/library/alpine:3.20',
      command: ['sh', '-c', long],
      labels: Object.fromEntries(Array.from({ length: 49 }, (_, i) => [`label${i}`, 'value ü'])),
    });

    const { taskId } = await coldBackend().launch(execution, constraints, ticket());

    const task = await describeTask(taskId);
    expect(task.overrides?.containerOverrides?.[0]?.command?.at(-1)).toBe(long);
    expect(JSON.stringify(task.overrides).length).toBeLessThanOrEqual(8192);
    // Every label is carried, none dropped.
    expect(task.tags).toHaveLength(50);
    expect(task.tags).toEqual(expect.arrayContaining([{ key: 'ferry:label:label48', value: 'value ü' }]));
  });

  it('fails a launch that RunTask would refuse without sending it, for good', async () => {
    // A spec the Fargate bid declines, handed to the backend all the same.
    const { execution, constraints } = launching({
      image: 'public.ecr.aws/docker/library/alpine:3.20',
      command: ['sh', '-c', 'a'.repeat(9000)],
      labels: { owners: 'ann,bob' },
    });
    const { backend, calls } = countedBackend();

    const failure = await backend.launch(execution, constraints, ticket()).catch((error: unknown) => error);

    expect(failure).toBeInstanceOf(BackendError);
    expect(failure).toMatchObject({ retryable: false });
    expect(String((failure as Error).message)).toMatch(
      /^RunTask would be refused: overrides of \d+ characters, RunTask takes at most 8192; tag ferry:label:owners: value has characters/,
    );
    expect(operations(calls)).not.toContain('RunTask');
  });

  it("holds calls to Fargate's rules where the emulator takes them", async () => {
    const definition = {
      ...coldBackend().taskDefinitionFor('public.ecr.aws/docker/library/alpine:3.20'),
      family: 'ferry-bridge-mode',
      networkMode: 'bridge' as const,
    };
    const seen: string[] = [];
    const checked = new ECSClient(clientConfig('ecs'));
    enforceFargateRules(checked, seen);

    await expect(checked.send(new RegisterTaskDefinitionCommand(definition))).rejects.toThrow(
      /Fargate would refuse this call: RegisterTaskDefinition ferry-bridge-mode: networkMode bridge, Fargate requires awsvpc/,
    );
    await expect(
      checked.send(
        new RunTaskCommand({
          cluster: aws.cluster,
          taskDefinition: 'ferry-bridge-mode',
          launchType: 'FARGATE',
          tags: Array.from({ length: 51 }, (_, i) => ({ key: `k${i}`, value: 'v' })),
        }),
      ),
    ).rejects.toThrow(
      /RunTask: no awsvpc network configuration; RunTask: 51 tags, ECS takes at most 50 per task/,
    );
    expect(seen).toHaveLength(3);
    // What the check is for: the emulator itself starts a task with 50 KB of overrides.
    const image = 'public.ecr.aws/docker/library/alpine:3.20';
    const { execution, constraints } = launching({ image, command: ['sh', '-c', 'a'.repeat(50_000)] });
    const backend = coldBackend();
    const input = backend.runTaskInput(
      execution,
      constraints,
      await backend.ensureTaskDefinition(image),
      ticket().uploadSecret,
    );
    const started = await aws.clients.ecs.send(new RunTaskCommand(input));
    expect(started.tasks).toHaveLength(1);
  });

  it('hands the workdir to the wrapper, since RunTask cannot set a working directory', async () => {
    const { execution, constraints } = launching({
      image: 'public.ecr.aws/docker/library/alpine:3.20',
      command: ['pwd'],
      workdir: '/data/work',
    });

    const { taskId } = await coldBackend().launch(execution, constraints, ticket());

    const task = await describeTask(taskId);
    expect(task.overrides?.containerOverrides?.[0]?.command).toEqual([
      '--io',
      '/ferry/io',
      '--timeout',
      '3600',
      '--workdir',
      '/data/work',
      '--',
      'pwd',
    ]);
  });

  it('leaves ephemeral storage at the Fargate default of 20 GiB unasked', async () => {
    const { execution, constraints } = launching({
      image: 'public.ecr.aws/docker/library/alpine:3.20',
      command: ['true'],
    });

    const { taskId } = await coldBackend().launch(execution, constraints, ticket());

    const task = await describeTask(taskId);
    expect(task.overrides?.cpu).toBe('256');
    expect(task.overrides?.memory).toBe('512');
    expect(task.overrides?.ephemeralStorage).toBeUndefined();
    expect(task.overrides?.containerOverrides?.[0]?.environment).toEqual([]);
  });

  it('reuses the task an earlier attempt started when the launch is retried', async () => {
    const { backend, calls } = countedBackend();
    const { execution, constraints } = launching({
      image: 'public.ecr.aws/docker/library/alpine:3.20',
      command: ['true'],
    });
    const first = await backend.launch(execution, constraints, ticket());

    const retried = await backend.launch({ ...execution, deferrals: 1 }, constraints, ticket());

    expect(retried.taskId).toBe(first.taskId);
    expect(operations(calls).filter((op) => op === 'RunTask')).toHaveLength(1);
    const listed = await aws.clients.ecs.send(
      new ListTasksCommand({ cluster: aws.cluster, startedBy: execution.id }),
    );
    expect(listed.taskArns).toEqual([first.taskId]);
  });

  it('stops a task, and stopping it again is harmless', async () => {
    const backend = coldBackend();
    const { execution, constraints } = launching({
      image: 'public.ecr.aws/docker/library/alpine:3.20',
      command: ['sleep', '3600'],
    });
    const { taskId } = await backend.launch(execution, constraints, ticket());

    await backend.stop(taskId, 'cancelled by the caller');
    await backend.stop(taskId, 'cancelled by the caller');

    const task = await describeTask(taskId);
    expect(task.desiredStatus).toBe('STOPPED');
    expect(task.lastStatus).toBe('STOPPED');
    expect(task.stoppedReason).toBe('cancelled by the caller');
    // A stopped task says how it stopped, so a lost stop event can be made up from it.
    expect(await backend.describe([taskId])).toMatchObject([
      {
        taskId,
        executionId: execution.id,
        lastStatus: 'STOPPED',
        stoppedReason: 'cancelled by the caller',
        containers: [{ name: task.containers?.[0]?.name }],
      },
    ]);
  });

  it('treats a task ECS does not know as already stopped', async () => {
    // ECS answers InvalidParameterException "The referenced task was not found."; moto 5.2.5
    // answers HTTP 500 with a Python traceback instead, so ECS's answer is given here.
    const client = checkedClient();
    const faults = new FaultInjector(client).always(
      'StopTask',
      ecsError('InvalidParameterException', 'The referenced task was not found.'),
    );
    const unknown = `arn:aws:ecs:us-east-1:123456789012:task/${aws.cluster.split('/').pop()}/0123456789abcdef0123456789abcdef`;

    await expect(coldBackend(client).stop(unknown, 'cancelled by the caller')).resolves.toBeUndefined();
    expect(faults.count('StopTask')).toBe(1);
  });

  it('reports tasks it does not know as MISSING, next to the ones it does', async () => {
    const backend = coldBackend();
    const { execution, constraints } = launching({
      image: 'public.ecr.aws/docker/library/alpine:3.20',
      command: ['sleep', '60'],
    });
    const { taskId } = await backend.launch(execution, constraints, ticket());
    const unknown = `arn:aws:ecs:us-east-1:123456789012:task/${aws.cluster.split('/').pop()}/fedcba9876543210fedcba9876543210`;

    const statuses = await backend.describe([unknown, taskId]);

    expect(statuses).toEqual([
      { taskId: unknown, executionId: '', lastStatus: 'MISSING' },
      // Known, in whatever phase: moto walks a task on towards STOPPED each time it is described.
      {
        taskId,
        executionId: execution.id,
        lastStatus: expect.stringMatching(/^(PROVISIONING|PENDING|RUNNING|STOPPED)$/),
      },
    ]);
    expect(await backend.describe([])).toEqual([]);
  });

  // moto walks a described task one phase on per DescribeTasks: DEACTIVATING, STOPPING,
  // DEPROVISIONING, then STOPPED. Another emulator keeps its own pace.
  it.skipIf(inject('awsEmulator') !== 'moto')(
    'reports a task winding down as RUNNING until it has stopped',
    async () => {
      const backend = coldBackend();
      const { execution, constraints } = launching({
        image: 'public.ecr.aws/docker/library/alpine:3.20',
        command: ['true'],
      });
      const { taskId } = await backend.launch(execution, constraints, ticket());

      const seen: string[] = [];
      for (let i = 0; i < 5; i++) seen.push((await backend.describe([taskId]))[0]?.lastStatus ?? '');

      expect(seen).toEqual(['RUNNING', 'RUNNING', 'RUNNING', 'STOPPED', 'STOPPED']);
    },
  );
});
