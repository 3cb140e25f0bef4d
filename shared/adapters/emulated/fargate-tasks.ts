// Realises ECS Fargate tasks as Docker containers, for the emulated AWS deployment. moto accepts
// RegisterTaskDefinition and RunTask but runs nothing: the gateway hands each registration and
// each started task to this module, which runs the task's containers the way Fargate does — a
// task volume per `volumes[]` entry, dependency order, essential containers, stop timeouts and
// reverse-order shutdown — reports every change as the detail of an "ECS Task State Change"
// event, answers DescribeTasks with what the containers really did, and removes the containers
// and volumes once the task has stopped.
import { randomUUID } from 'node:crypto';
import type {
  ContainerDefinition,
  ContainerDependency,
  RegisterTaskDefinitionCommandInput,
  Task,
  TaskOverride,
} from '@aws-sdk/client-ecs';
import type Docker from 'dockerode';
import type { Logger } from '../../logger.ts';

export type TaskLastStatus = 'PROVISIONING' | 'PENDING' | 'RUNNING' | 'DEPROVISIONING' | 'STOPPED';
export type ContainerLastStatus = 'PENDING' | 'RUNNING' | 'STOPPED';
export type StopCode =
  | 'UserInitiated'
  | 'SpotInterruption'
  | 'EssentialContainerExited'
  | 'TaskFailedToStart';

export interface ContainerStateChange {
  readonly name: string;
  readonly containerArn: string;
  readonly taskArn: string;
  readonly lastStatus: ContainerLastStatus;
  readonly exitCode?: number;
  readonly reason?: string;
  readonly image: string;
}

/** The `detail` of an EventBridge "ECS Task State Change" event, as ECS sends it. */
export interface TaskStateChange {
  readonly taskArn: string;
  readonly clusterArn: string;
  readonly taskDefinitionArn: string;
  readonly group: string;
  /** Absent when RunTask named no `startedBy`, as in ECS's own events. */
  readonly startedBy?: string;
  readonly launchType: 'FARGATE';
  readonly capacityProviderName: string;
  readonly cpu: string;
  readonly memory: string;
  readonly lastStatus: TaskLastStatus;
  readonly desiredStatus: 'RUNNING' | 'STOPPED';
  readonly stopCode?: StopCode;
  readonly stoppedReason?: string;
  /** Increases with every change of the task. */
  readonly version: number;
  readonly createdAt: string;
  readonly pullStartedAt?: string;
  readonly pullStoppedAt?: string;
  readonly connectivity?: 'CONNECTED';
  readonly connectivityAt?: string;
  readonly startedAt?: string;
  readonly stoppingAt?: string;
  readonly executionStoppedAt?: string;
  readonly stoppedAt?: string;
  readonly updatedAt: string;
  readonly containers: readonly ContainerStateChange[];
  readonly overrides: TaskOverride;
  readonly attachments: readonly unknown[];
  readonly availabilityZone: string;
  readonly platformVersion: '1.4.0';
  readonly tags?: readonly { readonly key: string; readonly value: string }[];
}

export interface FargateRealiserOptions {
  /** The engine that runs the containers. */
  readonly docker: Docker;
  /** Where a state change goes (the emulator turns it into an EventBridge event). */
  emit(detail: TaskStateChange): void;
  /** Extra environment for every container of a task (AWS endpoint, the task role's credentials URI). */
  environment(task: { taskArn: string; taskRoleArn?: string; startedBy?: string }): Record<string, string>;
  /** Docker network mode of every container (default 'host', so loopback emulators are reachable). */
  readonly networkMode?: string;
  /** Put on every container and volume, so a test can clean up: { 'ferry.emulated': deploymentId }. */
  readonly labels: Record<string, string>;
  readonly log: Logger;
}

/** The label that names the task a container or volume belongs to. */
export const TASK_LABEL = 'ferry.emulated.task';

/** Fargate's default time between SIGTERM and SIGKILL when a container stops. */
const DEFAULT_STOP_TIMEOUT_SECONDS = 30;
const MiB = 1024 * 1024;

interface Latch<T> {
  readonly promise: Promise<T>;
  settle(value: T): void;
}

function latch<T>(): Latch<T> {
  let resolve: (value: T) => void = () => {};
  let settled = false;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return {
    promise,
    settle(value) {
      if (settled) return;
      settled = true;
      resolve(value);
    },
  };
}

interface ContainerRun {
  readonly definition: ContainerDefinition;
  readonly name: string;
  readonly arn: string;
  readonly image: string;
  readonly essential: boolean;
  readonly stopTimeoutSeconds: number;
  lastStatus: ContainerLastStatus;
  exitCode?: number;
  reason?: string;
  docker?: Docker.Container;
  stopping: boolean;
  /** True once the container has started; false when it never will. */
  readonly started: Latch<boolean>;
  /** Its exit code once it has exited; undefined when it never ran. */
  readonly exited: Latch<number | undefined>;
}

interface TaskRun {
  readonly arn: string;
  readonly id: string;
  readonly region: string;
  readonly clusterArn: string;
  readonly definitionArn: string;
  readonly definition: RegisterTaskDefinitionCommandInput | undefined;
  readonly group: string;
  readonly startedBy: string | undefined;
  readonly capacityProviderName: string;
  readonly cpu: string;
  readonly memory: string;
  readonly overrides: TaskOverride;
  readonly taskRoleArn: string | undefined;
  readonly tags: readonly { key: string; value: string }[];
  lastStatus: TaskLastStatus;
  desiredStatus: 'RUNNING' | 'STOPPED';
  stopCode?: StopCode;
  stoppedReason?: string;
  version: number;
  readonly times: {
    createdAt: Date;
    updatedAt: Date;
    pullStartedAt?: Date;
    pullStoppedAt?: Date;
    connectivityAt?: Date;
    startedAt?: Date;
    stoppingAt?: Date;
    executionStoppedAt?: Date;
    stoppedAt?: Date;
  };
  readonly containers: ContainerRun[];
  /** Docker volume names, by task-definition volume name. */
  readonly volumes: Map<string, string>;
  /** Settles when the task's desired status becomes STOPPED. */
  readonly stopRequested: Latch<void>;
  /** Stops in flight, awaited before the task is torn down. */
  readonly stops: Set<Promise<void>>;
  /** Kill at once instead of waiting for stop timeouts (the emulator is closing). */
  hurry: boolean;
}

/** Whether a container's dependencies are met; a reason when they never can be. */
type Verdict = { readonly met: true } | { readonly met: false; readonly reason?: string };
const MET: Verdict = { met: true };
const STOPPING: Verdict = { met: false };

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));
const statusOf = (error: unknown): number | undefined => (error as { statusCode?: number }).statusCode;
const iso = (date: Date | undefined): string | undefined => date?.toISOString();
const str = (value: unknown): string | undefined =>
  typeof value === 'string' && value !== '' ? value : undefined;

/** Drops the keys whose value is undefined, so the detail reads like ECS's JSON. */
function compact<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

/** The containers' output is multiplexed (8-byte frame headers) when they have no TTY. */
function demultiplex(buffer: Buffer): string {
  const parts: Buffer[] = [];
  let at = 0;
  while (at + 8 <= buffer.length && buffer[at + 1] === 0 && buffer[at + 2] === 0 && buffer[at + 3] === 0) {
    const size = buffer.readUInt32BE(at + 4);
    parts.push(buffer.subarray(at + 8, at + 8 + size));
    at += 8 + size;
  }
  return at === 0 ? buffer.toString('utf8') : Buffer.concat(parts).toString('utf8');
}

export class FargateRealiser {
  private readonly docker: Docker;
  private readonly log: Logger;
  private readonly networkMode: string;
  /** Registered task definitions (the RegisterTaskDefinition body), by ARN. */
  private readonly definitions = new Map<string, RegisterTaskDefinitionCommandInput>();
  /** Every task this realiser has seen, kept after it stops for DescribeTasks. */
  private readonly tasks = new Map<string, TaskRun>();
  /** The realisation of each task not yet STOPPED and cleaned up; never rejects. */
  private readonly active = new Map<string, Promise<void>>();
  private engineCpus: Promise<number> | undefined;
  private closed = false;
  /** Image pulls wait for this (see `holdPulls`). */
  private pulls: Promise<void> = Promise.resolve();

  constructor(private readonly options: FargateRealiserOptions) {
    this.docker = options.docker;
    this.log = options.log;
    this.networkMode = options.networkMode ?? 'host';
  }

  registered(definitionArn: string, request: Record<string, unknown>): void {
    // ECS speaks JSON with the SDK's member names: the body is the command's input.
    this.definitions.set(definitionArn, request as unknown as RegisterTaskDefinitionCommandInput);
  }

  ranTasks(request: Record<string, unknown>, tasks: readonly Record<string, unknown>[]): void {
    for (const wire of tasks) {
      try {
        this.start(request, wire);
      } catch (error) {
        this.log.error('could not realise a Fargate task', { taskArn: wire.taskArn, error });
      }
    }
  }

  stopTask(taskArn: string, reason: string | undefined): void {
    this.requestStopFromOutside(taskArn, 'UserInitiated', reason ?? 'Task stopped by user');
  }

  /** A Fargate Spot interruption: the task is stopped as ECS stops a reclaimed one. */
  interrupt(taskArn: string): void {
    this.requestStopFromOutside(taskArn, 'SpotInterruption', 'Your Spot Task was interrupted.');
  }

  /**
   * Keeps every task that reaches PENDING from here on pulling its images, as a slow registry
   * would, until the returned function is called or the task is stopped.
   */
  holdPulls(): () => void {
    let release: () => void = () => {};
    this.pulls = new Promise<void>((resolve) => {
      release = resolve;
    });
    return () => {
      release();
      this.pulls = Promise.resolve();
    };
  }

  /** The tasks RunTask started for `startedBy` (Ferry names the execution there). */
  tasksStartedBy(startedBy: string): string[] {
    return [...this.tasks.values()].filter((t) => t.startedBy === startedBy).map((t) => t.arn);
  }

  /** The environment a running container of the task sees, as its processes would read it. */
  async environmentOf(taskArn: string, containerName: string): Promise<Record<string, string> | undefined> {
    const container = this.tasks.get(taskArn)?.containers.find((c) => c.name === containerName);
    const info = await container?.docker?.inspect();
    if (info === undefined) return undefined;
    return Object.fromEntries(
      (info.Config.Env ?? []).map((entry) => {
        const at = entry.indexOf('=');
        return [entry.slice(0, at), entry.slice(at + 1)];
      }),
    );
  }

  /** Kills one container at once, as if it had crashed. */
  crashContainer(taskArn: string, containerName: string): void {
    const task = this.tasks.get(taskArn);
    const container = task?.containers.find((c) => c.name === containerName);
    if (task === undefined || container?.docker === undefined || container.lastStatus !== 'RUNNING') {
      this.log.warn('no running container to crash', { taskArn, containerName });
      return;
    }
    this.track(task, this.kill(task, container));
  }

  describe(taskArn: string): Task | undefined {
    const task = this.tasks.get(taskArn);
    if (task === undefined) return undefined;
    return compact<Task>({
      taskArn: task.arn,
      clusterArn: task.clusterArn,
      taskDefinitionArn: task.definitionArn,
      group: task.group,
      startedBy: task.startedBy,
      launchType: 'FARGATE',
      capacityProviderName: task.capacityProviderName,
      platformVersion: '1.4.0',
      platformFamily: 'Linux',
      cpu: task.cpu,
      memory: task.memory,
      lastStatus: task.lastStatus,
      desiredStatus: task.desiredStatus,
      stopCode: task.stopCode,
      stoppedReason: task.stoppedReason,
      version: task.version,
      connectivity: task.times.connectivityAt === undefined ? undefined : 'CONNECTED',
      ...task.times,
      containers: task.containers.map((c) =>
        compact({
          containerArn: c.arn,
          taskArn: task.arn,
          name: c.name,
          image: c.image,
          lastStatus: c.lastStatus,
          exitCode: c.exitCode,
          reason: c.reason,
          networkInterfaces: [],
        }),
      ),
      overrides: task.overrides,
      attachments: [],
      availabilityZone: `${task.region}a`,
      tags: task.tags.length === 0 ? undefined : [...task.tags],
    });
  }

  /** Resolves when no task is being realised (all STOPPED and cleaned up). */
  async settled(): Promise<void> {
    while (this.active.size > 0) await Promise.all(this.active.values());
  }

  /** Stops every task at once (no stop timeouts) and removes everything this realiser created. */
  async close(): Promise<void> {
    this.closed = true;
    for (const task of this.tasks.values()) {
      if (task.lastStatus === 'STOPPED') continue;
      task.hurry = true;
      if (this.requestStop(task, 'UserInitiated', 'The emulated deployment was closed')) this.changed(task);
      for (const c of task.containers) if (c.lastStatus === 'RUNNING') this.track(task, this.kill(task, c));
    }
    await this.settled();
    await this.sweep();
  }

  private start(request: Record<string, unknown>, wire: Record<string, unknown>): void {
    const arn = str(wire.taskArn);
    if (arn === undefined || this.tasks.has(arn)) return;
    if (this.closed) {
      this.log.warn('the Fargate realiser is closed; the task will not run', { taskArn: arn });
      return;
    }
    const task = this.newTask(request, wire, arn);
    this.tasks.set(arn, task);
    const realising = this.realise(task)
      .catch((error: unknown) => this.log.error('realising a Fargate task failed', { taskArn: arn, error }))
      .finally(() => this.active.delete(arn));
    this.active.set(arn, realising);
  }

  private newTask(request: Record<string, unknown>, wire: Record<string, unknown>, arn: string): TaskRun {
    // arn:aws:ecs:<region>:<account>:task/<cluster>/<id>
    const [, , , region = 'us-east-1', account = '000000000000', resource = ''] = arn.split(':');
    const id = resource.split('/').pop() ?? randomUUID();
    const clusterName = resource.split('/').length > 2 ? resource.split('/')[1] : 'default';
    const definitionArn = str(wire.taskDefinitionArn) ?? String(request.taskDefinition ?? '');
    const definition = this.definitionOf(definitionArn);
    const overrides = (request.overrides ?? { containerOverrides: [] }) as TaskOverride;
    const wireContainers = (wire.containers ?? []) as {
      name?: string;
      containerArn?: string;
      image?: string;
    }[];
    const definitions: ContainerDefinition[] =
      definition?.containerDefinitions ?? wireContainers.map((c) => ({ name: c.name, image: c.image }));
    const strategy = request.capacityProviderStrategy as { capacityProvider?: string }[] | undefined;
    const createdAt = typeof wire.createdAt === 'number' ? new Date(wire.createdAt * 1000) : new Date();
    const tags = [
      ...((request.tags ?? []) as { key: string; value: string }[]),
      ...(request.propagateTags === 'TASK_DEFINITION'
        ? ((definition?.tags ?? []) as { key: string; value: string }[])
        : []),
    ];
    return {
      arn,
      id,
      region,
      clusterArn: str(wire.clusterArn) ?? `arn:aws:ecs:${region}:${account}:cluster/${clusterName}`,
      definitionArn,
      definition,
      group: str(wire.group) ?? str(request.group) ?? `family:${definition?.family ?? 'unknown'}`,
      startedBy: str(wire.startedBy) ?? str(request.startedBy),
      capacityProviderName:
        str(wire.capacityProviderName) ?? str(strategy?.[0]?.capacityProvider) ?? 'FARGATE',
      cpu: str(overrides.cpu) ?? str(definition?.cpu) ?? str(wire.cpu) ?? '256',
      memory: str(overrides.memory) ?? str(definition?.memory) ?? str(wire.memory) ?? '512',
      overrides,
      taskRoleArn: str(overrides.taskRoleArn) ?? str(definition?.taskRoleArn),
      tags,
      lastStatus: 'PROVISIONING',
      desiredStatus: 'RUNNING',
      version: 0,
      times: { createdAt, updatedAt: createdAt },
      containers: definitions.map((d) => {
        const name = d.name ?? '';
        return {
          definition: d,
          name,
          arn:
            wireContainers.find((c) => c.name === name)?.containerArn ??
            `arn:aws:ecs:${region}:${account}:container/${clusterName}/${id}/${randomUUID()}`,
          image: d.image ?? '',
          essential: d.essential !== false,
          stopTimeoutSeconds: d.stopTimeout ?? DEFAULT_STOP_TIMEOUT_SECONDS,
          lastStatus: 'PENDING',
          stopping: false,
          started: latch<boolean>(),
          exited: latch<number | undefined>(),
        };
      }),
      volumes: new Map(),
      stopRequested: latch<void>(),
      stops: new Set(),
      hurry: false,
    };
  }

  /** RunTask may name a definition by ARN, family:revision or family; moto answers with the ARN. */
  private definitionOf(reference: string): RegisterTaskDefinitionCommandInput | undefined {
    const exact = this.definitions.get(reference);
    if (exact !== undefined) return exact;
    const suffix = `task-definition/${reference}`;
    for (const [arn, definition] of this.definitions) if (arn.endsWith(suffix)) return definition;
    return undefined;
  }

  private async realise(task: TaskRun): Promise<void> {
    this.changed(task);
    try {
      if (task.definition === undefined) {
        throw new Error(`the emulator holds no registration of the task definition ${task.definitionArn}`);
      }
      await this.createVolumes(task);
      task.lastStatus = 'PENDING';
      task.times.connectivityAt = new Date();
      task.times.pullStartedAt = new Date();
      this.changed(task);
      await Promise.race([this.pulls, task.stopRequested.promise]);
      const missing = await this.missingImage(task);
      task.times.pullStoppedAt = new Date();
      if (missing !== undefined) {
        // What Fargate says when a registry has no such image; this emulator never pulls.
        missing.reason = `CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref ${missing.image}: not found`;
        this.requestStop(task, 'TaskFailedToStart', missing.reason);
      }
      await Promise.all(task.containers.map((c) => this.runContainer(task, c)));
    } catch (error) {
      this.requestStop(task, 'TaskFailedToStart', messageOf(error));
      for (const c of task.containers) this.neverStarted(task, c);
    }
    await this.tearDown(task);
  }

  private async createVolumes(task: TaskRun): Promise<void> {
    for (const volume of task.definition?.volumes ?? []) {
      const name = volume.name ?? '';
      if (volume.host?.sourcePath !== undefined || volume.efsVolumeConfiguration !== undefined) {
        this.log.warn('a host or EFS volume is emulated as task storage', {
          taskArn: task.arn,
          volume: name,
        });
      }
      const dockerName = `ferry-emu-${task.id}-${name}`;
      await this.docker.createVolume({ Name: dockerName, Labels: this.labelsOf(task) });
      task.volumes.set(name, dockerName);
    }
  }

  /** The first container, in definition order, whose image the engine does not hold. */
  private async missingImage(task: TaskRun): Promise<ContainerRun | undefined> {
    const images = [...new Set(task.containers.map((c) => c.image))];
    const present = await Promise.all(
      images.map(async (image) => {
        try {
          await this.docker.getImage(image).inspect();
          return true;
        } catch (error) {
          if (statusOf(error) === 404) return false;
          throw error;
        }
      }),
    );
    return task.containers.find((c) => present[images.indexOf(c.image)] === false);
  }

  /** Runs one container from its dependencies to its exit; never rejects. */
  private async runContainer(task: TaskRun, c: ContainerRun): Promise<void> {
    try {
      const verdict = await this.dependenciesOf(task, c);
      // Once the task is to stop, the agent starts nothing more and judges no dependency.
      if (task.desiredStatus === 'STOPPED') {
        this.neverStarted(task, c);
        return;
      }
      if (!verdict.met) {
        this.neverStarted(task, c, verdict.reason);
        return;
      }
      let container: Docker.Container;
      try {
        container = await this.docker.createContainer(await this.createOptions(task, c));
        c.docker = container;
        await container.start();
      } catch (error) {
        c.reason = `CannotStartContainerError: ${messageOf(error)}`;
        if (c.essential) this.requestStop(task, 'TaskFailedToStart', c.reason);
        this.neverStarted(task, c);
        this.changed(task);
        return;
      }
      c.lastStatus = 'RUNNING';
      c.started.settle(true);
      this.runningOnceAllStarted(task);
      this.changed(task);
      // A stop that came while the container was being created applies to it too.
      if ((task.desiredStatus as TaskRun['desiredStatus']) === 'STOPPED')
        this.track(task, this.stopContainer(task, c));
      const exit = await this.exitOf(container);
      c.exitCode = exit.code;
      if (exit.oomKilled) c.reason = 'OutOfMemoryError: Container killed due to memory usage';
      c.lastStatus = 'STOPPED';
      c.exited.settle(exit.code);
      this.runningOnceAllStarted(task);
      if (c.essential)
        this.requestStop(task, 'EssentialContainerExited', 'Essential container in task exited');
      this.changed(task);
      if (exit.code !== 0) await this.logTail(task, c, container);
    } catch (error) {
      this.log.error('lost track of a container', { taskArn: task.arn, container: c.name, error });
      c.reason ??= `the emulator lost track of the container: ${messageOf(error)}`;
      const started = c.lastStatus === 'RUNNING';
      c.lastStatus = 'STOPPED';
      c.started.settle(started);
      c.exited.settle(undefined);
      this.requestStop(task, started ? 'EssentialContainerExited' : 'TaskFailedToStart', c.reason);
      this.changed(task);
    }
  }

  /**
   * The agent reports a task by the earliest status among its containers: a task stays PENDING
   * while any container still waits to start (a dependency not yet met), and is RUNNING once
   * every container has started or stopped.
   */
  private runningOnceAllStarted(task: TaskRun): void {
    if (task.lastStatus !== 'PENDING' || task.desiredStatus === 'STOPPED') return;
    if (task.containers.some((c) => c.lastStatus === 'PENDING')) return;
    if (!task.containers.some((c) => c.lastStatus === 'RUNNING')) return;
    task.lastStatus = 'RUNNING';
    task.times.startedAt = new Date();
  }

  /**
   * A container that will not run. ECS marks one whose dependency can never be met as
   * stopped with exit code 143 and says why (amazon-ecs-agent's terminal dependency errors).
   */
  private neverStarted(task: TaskRun, c: ContainerRun, dependencyError?: string): void {
    c.lastStatus = 'STOPPED';
    c.started.settle(false);
    c.exited.settle(undefined);
    this.runningOnceAllStarted(task);
    if (dependencyError === undefined) return;
    c.reason = dependencyError;
    c.exitCode = 143;
    if (c.essential) this.requestStop(task, 'EssentialContainerExited', 'Essential container in task exited');
    this.changed(task);
  }

  /** Met when every dependency is; not met as soon as one can never be, or the task stops. */
  private dependenciesOf(task: TaskRun, c: ContainerRun): Promise<Verdict> {
    const checks = (c.definition.dependsOn ?? []).map((d) => this.dependency(task, c, d));
    return new Promise<Verdict>((resolve) => {
      let waiting = checks.length;
      if (waiting === 0) resolve(MET);
      for (const check of checks) {
        void check.then((verdict) => {
          if (!verdict.met) resolve(verdict);
          else if (--waiting === 0) resolve(MET);
        });
      }
    });
  }

  private async dependency(task: TaskRun, c: ContainerRun, d: ContainerDependency): Promise<Verdict> {
    const dep = task.containers.find((o) => o.name === d.containerName);
    const failed = (why: string): Verdict => ({
      met: false,
      reason: `CannotStartContainerError: dependency graph: failed to resolve container ordering dependency [${d.containerName}(${dep?.image ?? '?'})] for target [${c.name}(${c.image})] ${why}`,
    });
    if (dep === undefined) return failed('because the task has no such container');
    const stopping = task.stopRequested.promise.then(() => 'stopping' as const);
    if (d.condition === 'COMPLETE' || d.condition === 'SUCCESS') {
      const code = await Promise.race([dep.exited.promise, stopping]);
      if (code === 'stopping') return STOPPING;
      if (code === undefined) return failed('because dependency will never start');
      return d.condition === 'SUCCESS' && code !== 0
        ? failed('as dependency did not exit successfully.')
        : MET;
    }
    // START, and HEALTHY: this emulator runs no health checks, so a started container counts.
    const started = await Promise.race([dep.started.promise, stopping]);
    if (started === 'stopping') return STOPPING;
    return started ? MET : failed('because dependency will never start');
  }

  private async createOptions(task: TaskRun, c: ContainerRun): Promise<Docker.ContainerCreateOptions> {
    const d = c.definition;
    const override = task.overrides.containerOverrides?.find((o) => o.name === c.name);
    const env = new Map<string, string>([
      // What Fargate puts in every container.
      ['AWS_REGION', task.region],
      ['AWS_DEFAULT_REGION', task.region],
      ['AWS_EXECUTION_ENV', 'AWS_ECS_FARGATE'],
    ]);
    for (const pair of [...(d.environment ?? []), ...(override?.environment ?? [])]) {
      if (pair.name !== undefined) env.set(pair.name, pair.value ?? '');
    }
    const extra = this.options.environment({
      taskArn: task.arn,
      ...(task.taskRoleArn === undefined ? {} : { taskRoleArn: task.taskRoleArn }),
      ...(task.startedBy === undefined ? {} : { startedBy: task.startedBy }),
    });
    for (const [name, value] of Object.entries(extra)) env.set(name, value);
    const mounts = (d.mountPoints ?? []).map((m) => {
      const source = task.volumes.get(m.sourceVolume ?? '');
      if (source === undefined) throw new Error(`mount point ${m.containerPath} names no volume of the task`);
      return {
        Type: 'volume' as const,
        Source: source,
        Target: m.containerPath ?? '',
        ReadOnly: m.readOnly === true,
      };
    });
    // Docker cannot share one limit between containers: each gets the whole task's size.
    const memory = Math.min(Number(task.memory), d.memory ?? Number.POSITIVE_INFINITY) * MiB;
    const reservation = d.memoryReservation === undefined ? undefined : d.memoryReservation * MiB;
    const cpus = Math.min(Number(task.cpu) / 1024, await this.cpus());
    const command = override?.command ?? d.command;
    return compact<Docker.ContainerCreateOptions>({
      name: `ferry-emu-${task.id}-${c.name}`,
      Image: c.image,
      Entrypoint: d.entryPoint,
      Cmd: command,
      User: d.user,
      WorkingDir: d.workingDirectory,
      Env: [...env].map(([name, value]) => `${name}=${value}`),
      Labels: { ...this.labelsOf(task), 'ferry.emulated.container': c.name },
      Tty: d.pseudoTerminal === true ? true : undefined,
      StopTimeout: c.stopTimeoutSeconds,
      HostConfig: compact<Docker.HostConfig>({
        NetworkMode: this.networkMode,
        Mounts: mounts,
        Memory: Number.isFinite(memory) && memory > 0 ? memory : undefined,
        MemoryReservation: reservation !== undefined && reservation < memory ? reservation : undefined,
        NanoCpus: cpus > 0 ? Math.round(cpus * 1e9) : undefined,
        Init: d.linuxParameters?.initProcessEnabled === true ? true : undefined,
        ReadonlyRootfs: d.readonlyRootFilesystem === true ? true : undefined,
        Ulimits: d.ulimits?.map((u) => ({ Name: u.name, Soft: u.softLimit, Hard: u.hardLimit })),
      }),
    });
  }

  private cpus(): Promise<number> {
    this.engineCpus ??= this.docker.info().then(
      (info: { NCPU?: number }) => info.NCPU ?? 1,
      () => 1,
    );
    return this.engineCpus;
  }

  private async exitOf(container: Docker.Container): Promise<{ code: number; oomKilled: boolean }> {
    const waited = (await container.wait()) as { StatusCode: number };
    const state = await container.inspect().then(
      (info) => info.State,
      () => undefined,
    );
    return { code: waited.StatusCode, oomKilled: state?.OOMKilled === true };
  }

  /** The end of a failed container's output, since the containers are removed when the task stops. */
  private async logTail(task: TaskRun, c: ContainerRun, container: Docker.Container): Promise<void> {
    try {
      const output = (await container.logs({ stdout: true, stderr: true, tail: 20 })) as unknown as Buffer;
      this.log.info('a task container exited', {
        taskArn: task.arn,
        container: c.name,
        exitCode: c.exitCode,
        output: demultiplex(output),
      });
    } catch (error) {
      this.log.debug('could not read a container log', { taskArn: task.arn, container: c.name, error });
    }
  }

  private requestStopFromOutside(taskArn: string, stopCode: StopCode, reason: string): void {
    const task = this.tasks.get(taskArn);
    if (task === undefined) {
      this.log.warn('asked to stop a task the emulator is not running', { taskArn });
      return;
    }
    if (this.requestStop(task, stopCode, reason)) this.changed(task);
  }

  /** The task's desired status becomes STOPPED (the first reason stays); running containers are stopped. */
  private requestStop(task: TaskRun, stopCode: StopCode, reason: string): boolean {
    if (task.desiredStatus === 'STOPPED') return false;
    task.desiredStatus = 'STOPPED';
    task.stopCode = stopCode;
    task.stoppedReason = reason;
    task.times.stoppingAt = new Date();
    task.stopRequested.settle();
    for (const c of task.containers)
      if (c.lastStatus === 'RUNNING') this.track(task, this.stopContainer(task, c));
    return true;
  }

  /** SIGTERM, then SIGKILL after the stop timeout; only once the containers that depend on it have stopped. */
  private async stopContainer(task: TaskRun, c: ContainerRun): Promise<void> {
    if (c.stopping || c.docker === undefined) return;
    c.stopping = true;
    const dependents = task.containers.filter((o) =>
      (o.definition.dependsOn ?? []).some((d) => d.containerName === c.name),
    );
    await Promise.all(dependents.map((o) => o.exited.promise));
    if (c.lastStatus !== 'RUNNING') return;
    try {
      await c.docker.stop({ t: task.hurry ? 0 : c.stopTimeoutSeconds });
    } catch (error) {
      // 304: it had already stopped; 404: it is already gone.
      if (statusOf(error) !== 304 && statusOf(error) !== 404) {
        this.log.warn('could not stop a task container', { taskArn: task.arn, container: c.name, error });
      }
    }
  }

  private async kill(task: TaskRun, c: ContainerRun): Promise<void> {
    try {
      await c.docker?.kill({ signal: 'SIGKILL' });
    } catch (error) {
      if (statusOf(error) !== 409 && statusOf(error) !== 404) {
        this.log.warn('could not kill a task container', { taskArn: task.arn, container: c.name, error });
      }
    }
  }

  private track(task: TaskRun, stop: Promise<void>): void {
    task.stops.add(stop);
    void stop.finally(() => task.stops.delete(stop));
  }

  private async tearDown(task: TaskRun): Promise<void> {
    while (task.stops.size > 0) await Promise.all(task.stops);
    // A definition without an essential container that ran to its end stops too.
    this.requestStop(task, 'EssentialContainerExited', 'Essential container in task exited');
    task.times.executionStoppedAt = new Date();
    task.lastStatus = 'DEPROVISIONING';
    this.changed(task);
    await Promise.all(
      task.containers.map(async (c) => {
        try {
          await c.docker?.remove({ force: true });
        } catch (error) {
          if (statusOf(error) !== 404) this.log.warn('could not remove a task container', { error });
        }
      }),
    );
    await Promise.all(
      [...task.volumes.values()].map(async (name) => {
        try {
          await this.docker.getVolume(name).remove({ force: true });
        } catch (error) {
          if (statusOf(error) !== 404) this.log.warn('could not remove a task volume', { name, error });
        }
      }),
    );
    task.lastStatus = 'STOPPED';
    task.times.stoppedAt = new Date();
    this.changed(task);
  }

  /** Whatever the engine still holds of this realiser's tasks (after an engine error). */
  private async sweep(): Promise<void> {
    const ours = (labels: Record<string, string> | undefined) => this.tasks.has(labels?.[TASK_LABEL] ?? '');
    try {
      const containers = await this.docker.listContainers({ all: true, filters: { label: [TASK_LABEL] } });
      for (const info of containers.filter((c) => ours(c.Labels))) {
        await this.docker
          .getContainer(info.Id)
          .remove({ force: true })
          .catch(() => undefined);
      }
      const { Volumes: volumes } = await this.docker.listVolumes({ filters: { label: [TASK_LABEL] } });
      for (const volume of (volumes ?? []).filter((v) => ours(v.Labels))) {
        await this.docker
          .getVolume(volume.Name)
          .remove({ force: true })
          .catch(() => undefined);
      }
    } catch (error) {
      this.log.warn('could not sweep the emulated tasks’ containers', { error });
    }
  }

  private labelsOf(task: TaskRun): Record<string, string> {
    return { ...this.options.labels, [TASK_LABEL]: task.arn };
  }

  /** Emits the task as it is now, with the next version. */
  private changed(task: TaskRun): void {
    task.version += 1;
    task.times.updatedAt = new Date();
    const t = task.times;
    const detail = compact<TaskStateChange>({
      taskArn: task.arn,
      clusterArn: task.clusterArn,
      taskDefinitionArn: task.definitionArn,
      group: task.group,
      startedBy: task.startedBy,
      launchType: 'FARGATE',
      capacityProviderName: task.capacityProviderName,
      cpu: task.cpu,
      memory: task.memory,
      lastStatus: task.lastStatus,
      desiredStatus: task.desiredStatus,
      stopCode: task.stopCode,
      stoppedReason: task.stoppedReason,
      version: task.version,
      createdAt: t.createdAt.toISOString(),
      pullStartedAt: iso(t.pullStartedAt),
      pullStoppedAt: iso(t.pullStoppedAt),
      connectivity: t.connectivityAt === undefined ? undefined : 'CONNECTED',
      connectivityAt: iso(t.connectivityAt),
      startedAt: iso(t.startedAt),
      stoppingAt: iso(t.stoppingAt),
      executionStoppedAt: iso(t.executionStoppedAt),
      stoppedAt: iso(t.stoppedAt),
      updatedAt: t.updatedAt.toISOString(),
      containers: task.containers.map((c) =>
        compact<ContainerStateChange>({
          name: c.name,
          containerArn: c.arn,
          taskArn: task.arn,
          lastStatus: c.lastStatus,
          exitCode: c.exitCode,
          reason: c.reason,
          image: c.image,
        }),
      ),
      overrides: task.overrides,
      attachments: [],
      availabilityZone: `${task.region}a`,
      platformVersion: '1.4.0',
      tags: task.tags.length === 0 ? undefined : task.tags,
    });
    try {
      this.options.emit(detail);
    } catch (error) {
      this.log.error('could not emit a task state change', { taskArn: task.arn, error });
    }
  }
}
