// ComputeBackend on ECS Fargate. One task definition per image (family named from a hash
// of what defines it, looked up before it is registered), RunTask with task-level size
// overrides, the attempt's upload secret for the publisher alone and a client token derived
// from the execution id, failures[] read as retryable (capacity, throttling) or final
// (invalid request), StopTask for cancel and timeout.
import { createHash } from 'node:crypto';
import {
  ClientException,
  DescribeTaskDefinitionCommand,
  DescribeTasksCommand,
  ECSClient,
  ECSServiceException,
  type Failure,
  ListTasksCommand,
  RegisterTaskDefinitionCommand,
  type RegisterTaskDefinitionCommandInput,
  RunTaskCommand,
  type RunTaskCommandInput,
  StopTaskCommand,
  type Task,
} from '@aws-sdk/client-ecs';
import type { Execution, ResolvedConstraints } from '../../domain/execution.ts';
import { runTaskViolations } from '../../domain/fargate-rules.ts';
import {
  DATA_ROOT,
  executionTags,
  INIT_CONTAINER,
  PUBLISHER_CONTAINER,
  SHARED_PATH,
  SHARED_VOLUME,
  STAGE_CONTAINER,
  type TaskDataSpec,
  taskDataPlan,
  taskOverrides,
} from '../../domain/fargate-task.ts';
import type { JobStep } from '../../domain/job-spec.ts';
import { stepContainer } from '../../domain/task-event.ts';
import { BackendError } from '../../errors.ts';
import type { Logger } from '../../logger.ts';
import type { ComputeBackend, LaunchTicket, LiveRead, TaskStatus } from '../../ports.ts';

export interface EcsBackendOptions {
  readonly cluster: string;
  /** Ferry's runner image: the wrapper for the init container, and the publisher. */
  readonly runnerImage: string;
  /** The results bucket, which the publisher writes itself when there is no `apiUrl`. */
  readonly bucket: string;
  /**
   * Ferry's API: the publisher asks it for upload links to its execution's keys, proving
   * itself with the launch's upload secret, so the task role needs no write permission.
   * Without it the publisher writes to `bucket` with the task role's own permissions.
   */
  readonly apiUrl?: string;
  readonly subnets: readonly string[];
  readonly securityGroups: readonly string[];
  readonly assignPublicIp: boolean;
  readonly executionRoleArn: string;
  readonly taskRoleArn: string;
  readonly logGroup: string;
  readonly region: string;
  /** `FARGATE` or `FARGATE_SPOT`. */
  readonly capacityProvider: 'FARGATE' | 'FARGATE_SPOT';
  /** Whether the stage container addresses S3 buckets by path (an emulator), as Ferry itself does. */
  readonly s3ForcePathStyle?: boolean;
  readonly client?: ECSClient;
  readonly log: Logger;
  /** Pause between in-call retries; injectable so tests of backoff need not sleep. */
  readonly sleep?: (ms: number) => Promise<void>;
}

export { INIT_CONTAINER, PUBLISHER_CONTAINER, STAGE_CONTAINER };

/** What shapes a job's task definition besides its image: its data, and its steps. */
export type TaskShape = TaskDataSpec & {
  readonly steps?: readonly Pick<JobStep, 'image' | 'ignoreError'>[];
};

/** Reasons in failures[] or error names that a later attempt may get past. */
const RETRYABLE = [
  /capacity is unavailable/i,
  /^RESOURCE:/,
  /^AGENT$/,
  /throttl/i,
  /rate exceeded/i,
  /too many concurrent attempts/i,
  /ServerException/,
  /ServiceUnavailable/i,
  /InternalError/i,
];

/**
 * ECS's task lifecycle in the port's words. A task winding down (DEACTIVATING, STOPPING,
 * DEPROVISIONING) has run and still holds its resources: it is not PENDING. DELETED is gone.
 */
const TASK_STATUS: Readonly<Record<string, TaskStatus['lastStatus']>> = {
  PROVISIONING: 'PROVISIONING',
  PENDING: 'PENDING',
  ACTIVATING: 'PENDING',
  RUNNING: 'RUNNING',
  DEACTIVATING: 'RUNNING',
  STOPPING: 'RUNNING',
  DEPROVISIONING: 'RUNNING',
  STOPPED: 'STOPPED',
  DELETED: 'MISSING',
};

const isRetryable = (text: string): boolean => RETRYABLE.some((pattern) => pattern.test(text));

function describeError(error: unknown): string {
  const e = error as { name?: string; message?: string };
  return `${e.name ?? 'Error'}: ${e.message ?? String(error)}`;
}

export class EcsBackend implements ComputeBackend {
  readonly platform = 'fargate' as const;
  private readonly ecs: ECSClient;
  private readonly sleep: (ms: number) => Promise<void>;
  /** Task definition ARNs by family, for the life of this process (a warm Lambda). */
  private readonly definitions = new Map<string, string>();

  constructor(private readonly options: EcsBackendOptions) {
    this.ecs = options.client ?? new ECSClient({});
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  /**
   * The task definition for an image and the shape of a job: everything that makes two tasks
   * different but the run's own settings. Jobs with data get a volume per directory it is in
   * (see taskDataPlan) and a stage container that fetches the inputs before the job starts. A
   * job with steps gets a container per step, each started once the one before it has ended:
   * successfully, or in any way after a step whose failure is ignored.
   */
  taskDefinitionFor(
    image: string,
    shape: TaskShape = { inputs: [], outputs: [] },
  ): RegisterTaskDefinitionCommandInput {
    const data = shape;
    const o = this.options;
    const logs = (prefix: string) => ({
      logDriver: 'awslogs' as const,
      options: { 'awslogs-group': o.logGroup, 'awslogs-region': o.region, 'awslogs-stream-prefix': prefix },
    });
    const shared = [{ sourceVolume: SHARED_VOLUME, containerPath: SHARED_PATH, readOnly: false }];
    const steps = shape.steps ?? [{ image, ignoreError: false }];
    const afterInit = [{ containerName: INIT_CONTAINER, condition: 'SUCCESS' as const }];
    const plan = taskDataPlan(data);
    const staged = plan.volumes.length > 0;
    // Ferry's containers see volume K at /ferry-data/K; the job sees it at its own path.
    const ferrySide = (volumes: typeof plan.volumes, readOnly: boolean) =>
      volumes.map((volume) => ({
        sourceVolume: volume.name,
        containerPath: `${DATA_ROOT}/${plan.volumes.indexOf(volume)}`,
        readOnly,
      }));
    const stage = {
      // Fetches the inputs into the data volumes and opens the output directories to the job.
      name: STAGE_CONTAINER,
      image: o.runnerImage,
      essential: false,
      // Root, to make the volumes' directories whatever user the job's image runs as.
      user: '0',
      command: ['stage'],
      dependsOn: afterInit,
      mountPoints: [...shared, ...ferrySide(plan.volumes, false)],
      memoryReservation: 64,
      environment: [
        { name: 'FERRY_IO_DIR', value: `${SHARED_PATH}/io` },
        ...(o.s3ForcePathStyle ? [{ name: 'FERRY_S3_FORCE_PATH_STYLE', value: 'true' }] : []),
      ],
      logConfiguration: logs('ferry-stage'),
    };
    const body = {
      requiresCompatibilities: ['FARGATE' as const],
      networkMode: 'awsvpc' as const,
      cpu: '256',
      memory: '512',
      executionRoleArn: o.executionRoleArn,
      taskRoleArn: o.taskRoleArn,
      runtimePlatform: { operatingSystemFamily: 'LINUX' as const, cpuArchitecture: 'X86_64' as const },
      // Task-local storage the containers share: the wrapper and the output FIFOs; the job's data.
      volumes: [{ name: SHARED_VOLUME }, ...plan.volumes.map((volume) => ({ name: volume.name }))],
      containerDefinitions: [
        {
          // Hands the static wrapper to the job's image and makes the FIFOs, then exits.
          name: INIT_CONTAINER,
          image: o.runnerImage,
          essential: false,
          user: '0',
          entryPoint: ['/opt/ferry/ferry-wrapper'],
          command: ['--init', SHARED_PATH, ...(steps.length > 1 ? [String(steps.length)] : [])],
          mountPoints: shared,
          memoryReservation: 16,
          logConfiguration: logs('ferry-init'),
        },
        ...(staged ? [stage] : []),
        ...steps.map((step, index) => ({
          // The step's own image, run through the wrapper: no shell needed, exit code recorded.
          name: stepContainer(index),
          image: step.image,
          // The publisher decides when the task ends, once the output is stored.
          essential: false,
          entryPoint: [`${SHARED_PATH}/bin/ferry-wrapper`],
          dependsOn:
            index > 0
              ? [
                  {
                    containerName: stepContainer(index - 1),
                    condition: steps[index - 1]?.ignoreError ? ('COMPLETE' as const) : ('SUCCESS' as const),
                  },
                ]
              : staged
                ? [...afterInit, { containerName: STAGE_CONTAINER, condition: 'SUCCESS' as const }]
                : afterInit,
          mountPoints: [
            ...shared,
            ...plan.volumes.map((volume) => ({
              sourceVolume: volume.name,
              containerPath: volume.containerPath,
              readOnly: !volume.writable,
            })),
          ],
          // A soft reservation only: the task-level memory is the job's limit. Some emulators
          // cannot place a container that has neither a memory limit nor a reservation. Later
          // steps reserve less, so that all of them fit the smallest task (512 MiB).
          memoryReservation: index === 0 ? 64 : 32,
          logConfiguration: logs('ferry-job'),
        })),
        {
          name: PUBLISHER_CONTAINER,
          image: o.runnerImage,
          essential: true,
          dependsOn: afterInit,
          // Root only where it collects outputs, which the job may have left readable by it alone.
          ...(plan.outputs.length > 0 ? { user: '0' } : {}),
          mountPoints: [
            ...shared,
            ...ferrySide(
              plan.volumes.filter((volume) => volume.writable),
              true,
            ),
          ],
          memoryReservation: 64,
          // Time to store what was captured after StopTask (cancel, timeout).
          stopTimeout: 60,
          environment: [
            o.apiUrl === undefined
              ? { name: 'FERRY_BUCKET', value: o.bucket }
              : { name: 'FERRY_API_URL', value: o.apiUrl },
            { name: 'FERRY_IO_DIR', value: `${SHARED_PATH}/io` },
          ],
          logConfiguration: logs('ferry-publisher'),
        },
      ],
    };
    const family = `ferry-${createHash('sha256').update(JSON.stringify(body)).digest('hex').slice(0, 20)}`;
    return { family, ...body };
  }

  /** Describe first (cheap, and no new revision); register only for a new family. */
  async ensureTaskDefinition(image: string, shape?: TaskShape): Promise<string> {
    const definition = this.taskDefinitionFor(image, shape);
    const family = definition.family ?? '';
    const cached = this.definitions.get(family);
    if (cached !== undefined) return cached;
    for (let attempt = 1; ; attempt++) {
      try {
        const found = await this.ecs.send(new DescribeTaskDefinitionCommand({ taskDefinition: family }));
        const arn =
          found.taskDefinition?.status === 'ACTIVE' ? found.taskDefinition.taskDefinitionArn : undefined;
        if (arn !== undefined) {
          this.definitions.set(family, arn);
          return arn;
        }
      } catch (error) {
        if (
          !(error instanceof ClientException) ||
          !/unable to describe|not found|does not exist/i.test(String(error.message))
        ) {
          if (!isRetryable(describeError(error)) || attempt >= 5) throw this.launchError(error);
          await this.sleep(backoff(attempt));
          continue;
        }
      }
      try {
        const registered = await this.ecs.send(new RegisterTaskDefinitionCommand(definition));
        const arn = registered.taskDefinition?.taskDefinitionArn;
        if (arn === undefined)
          throw new BackendError('RegisterTaskDefinition returned no ARN', { retryable: true });
        this.definitions.set(family, arn);
        return arn;
      } catch (error) {
        // Another dispatcher registering the same family at once, or the 1-per-second
        // registration rate: wait, then describe again — the other one's revision will do.
        if (!isRetryable(describeError(error)) || attempt >= 5) throw this.launchError(error);
        await this.sleep(backoff(attempt));
      }
    }
  }

  runTaskInput(
    execution: Execution,
    constraints: ResolvedConstraints,
    taskDefinition: string,
    uploadSecret: string,
  ): RunTaskCommandInput {
    const size = constraints.fargate ?? {
      cpu: String(Math.round(constraints.cpu * 1024)),
      memory: String(constraints.memoryMiB),
      ephemeralStorageGiB: constraints.diskGiB,
    };
    return {
      cluster: this.options.cluster,
      taskDefinition,
      count: 1,
      capacityProviderStrategy: [{ capacityProvider: this.options.capacityProvider, weight: 1 }],
      startedBy: execution.id,
      // Same execution, same token: a retried RunTask returns the task it already started, and
      // one with another attempt's secret is refused (ConflictException) rather than run twice.
      clientToken: createHash('sha256').update(`ferry:${execution.id}`).digest('hex').slice(0, 64),
      group: 'ferry',
      networkConfiguration: {
        awsvpcConfiguration: {
          subnets: [...this.options.subnets],
          securityGroups: [...this.options.securityGroups],
          assignPublicIp: this.options.assignPublicIp ? 'ENABLED' : 'DISABLED',
        },
      },
      // The same builders the Fargate bid measures, so what was accepted is what is sent.
      overrides: taskOverrides(execution.spec, execution.id, size, uploadSecret),
      tags: executionTags(execution.id, execution.spec.labels),
      propagateTags: 'TASK_DEFINITION',
    };
  }

  async launch(
    execution: Execution,
    constraints: ResolvedConstraints,
    ticket: LaunchTicket,
  ): Promise<{ taskId: string }> {
    if (execution.deferrals > 0 || (execution.launches?.length ?? 0) > 1) {
      // A retry or a relaunch: if an earlier attempt started a task after all, that task is the one.
      const existing = await this.findTask(execution.id);
      if (existing !== undefined) return { taskId: existing };
    }
    const taskDefinition = await this.ensureTaskDefinition(execution.spec.image, execution.spec);
    const input = this.runTaskInput(execution, constraints, taskDefinition, ticket.uploadSecret);
    // Fargate would refuse it on every attempt; say why rather than ask.
    const violations = runTaskViolations(input, this.taskDefinitionFor(execution.spec.image, execution.spec));
    if (violations.length > 0) {
      throw new BackendError(`RunTask would be refused: ${violations.join('; ')}`, { retryable: false });
    }
    for (let attempt = 1; ; attempt++) {
      let failures: Failure[] = [];
      try {
        const reply = await this.ecs.send(new RunTaskCommand(input));
        const arn = reply.tasks?.[0]?.taskArn;
        if (arn !== undefined) return { taskId: arn };
        failures = reply.failures ?? [];
      } catch (error) {
        if (error instanceof ECSServiceException && error.name === 'ConflictException') {
          // The token was used by an earlier attempt (another secret) that started a task.
          return { taskId: await this.startedEarlier(execution.id, error) };
        }
        if (!isRetryable(describeError(error)) || attempt >= 3) throw this.launchError(error);
        await this.sleep(backoff(attempt));
        continue;
      }
      // RunTask "succeeded" without a task: the reasons are in failures[].
      const reason = failures
        .map((f) => `${f.reason ?? 'unknown'}${f.detail ? ` (${f.detail})` : ''}`)
        .join('; ');
      const retryable = failures.length === 0 || failures.some((f) => isRetryable(f.reason ?? ''));
      if (!retryable || attempt >= 3) {
        throw new BackendError(`RunTask started no task: ${reason || 'no reason given'}`, { retryable });
      }
      this.options.log.warn('RunTask started no task; retrying', {
        executionId: execution.id,
        reason,
        attempt,
      });
      await this.sleep(backoff(attempt));
    }
  }

  private launchError(error: unknown): BackendError {
    if (error instanceof BackendError) return error;
    const text = describeError(error);
    return new BackendError(text, { cause: error, retryable: isRetryable(text) });
  }

  /** The task an earlier RunTask with this execution's token started; ECS may list it a little late. */
  private async startedEarlier(executionId: string, conflict: unknown): Promise<string> {
    for (let attempt = 1; attempt <= 3; attempt++) {
      // A short job may have ended already: its task is the one all the same.
      const existing = (await this.findTask(executionId)) ?? (await this.findTask(executionId, 'STOPPED'));
      if (existing !== undefined) return existing;
      await this.sleep(backoff(attempt));
    }
    throw new BackendError(
      `an earlier launch attempt of ${executionId} started a task that ECS does not list yet`,
      { cause: conflict, retryable: true },
    );
  }

  private async findTask(
    executionId: string,
    desiredStatus: 'RUNNING' | 'STOPPED' = 'RUNNING',
  ): Promise<string | undefined> {
    const reply = await this.ecs.send(
      new ListTasksCommand({ cluster: this.options.cluster, startedBy: executionId, desiredStatus }),
    );
    return reply.taskArns?.[0];
  }

  async stop(taskId: string, reason: string): Promise<void> {
    try {
      await this.ecs.send(
        new StopTaskCommand({ cluster: this.options.cluster, task: taskId, reason: reason.slice(0, 255) }),
      );
    } catch (error) {
      // A task that is already gone is stopped.
      if (/not found|does not exist|STOPPED/i.test(describeError(error))) return;
      throw new BackendError(`could not stop ${taskId}: ${describeError(error)}`, {
        cause: error,
        retryable: true,
      });
    }
  }

  async describe(taskIds: readonly string[]): Promise<readonly TaskStatus[]> {
    const statuses: TaskStatus[] = [];
    for (let i = 0; i < taskIds.length; i += 100) {
      const batch = taskIds.slice(i, i + 100);
      const reply = await this.ecs.send(
        new DescribeTasksCommand({ cluster: this.options.cluster, tasks: batch }),
      );
      for (const taskId of batch) {
        const task = reply.tasks?.find((t) => t.taskArn === taskId);
        const lastStatus = task === undefined ? 'MISSING' : (TASK_STATUS[task.lastStatus ?? ''] ?? 'PENDING');
        statuses.push({
          taskId,
          executionId: task?.startedBy ?? '',
          lastStatus,
          ...(lastStatus === 'STOPPED' && task !== undefined ? stopDetails(task) : {}),
        });
      }
    }
    return statuses;
  }

  async readLive(): Promise<LiveRead | undefined> {
    // ECS holds no output: a running task's output is the live window its publisher keeps
    // in the results bucket, which the logs use case reads when a backend has nothing.
    return undefined;
  }
}

/** How a stopped task ended, as DescribeTasks tells it: the fields its STOPPED event carries. */
function stopDetails(task: Task): Partial<TaskStatus> {
  return {
    ...(task.stopCode === undefined ? {} : { stopCode: task.stopCode }),
    ...(task.stoppedReason === undefined ? {} : { stoppedReason: task.stoppedReason }),
    ...(task.stoppedAt === undefined ? {} : { stoppedAt: task.stoppedAt.toISOString() }),
    containers: (task.containers ?? []).map((c) => ({
      name: c.name ?? '',
      ...(c.lastStatus === undefined ? {} : { lastStatus: c.lastStatus }),
      ...(c.exitCode === undefined ? {} : { exitCode: c.exitCode }),
      ...(c.reason === undefined ? {} : { reason: c.reason }),
    })),
  };
}

function backoff(attempt: number): number {
  const base = Math.min(2000, 100 * 2 ** attempt);
  return base / 2 + Math.random() * (base / 2);
}
