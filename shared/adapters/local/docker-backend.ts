// ComputeBackend on a Docker Engine. Each job is one container, named and labelled after
// its execution, with the bid's CPU and memory applied and no network unless asked. The
// server attaches to it for byte-exact capture; containers outlive a server restart, and
// `recover` adopts them again (output is replayed from the engine's local log driver).
// Every container also carries the identity of the server that made it: several servers
// may share one engine, and each adopts, describes and removes only its own.
// Stopping escalates without waiting on the engine: SIGTERM, SIGKILL after a grace, then a
// forced removal; if the engine still has not confirmed the end, the task is reported ended
// anyway, with its resources held (DEPROVISIONING) until the container is really gone.
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { Execution, ResolvedConstraints } from '../../domain/execution.ts';
import type { Logger } from '../../logger.ts';
import type { ComputeBackend, LiveRead, ObjectStore, TaskStatus } from '../../ports.ts';
import {
  CANCEL_GRACE_MS,
  type LocalTask,
  LocalTaskBook,
  messageOf,
  type TaskEventSink,
  TIMEOUT_GRACE_MS,
} from './local-tasks.ts';

export const LABEL_EXECUTION = 'ferry.execution';
export const LABEL_SERVER = 'ferry.server';
const TASK_PREFIX = 'docker/';
/** After SIGKILL, how long the container has to exit before it is removed by force. */
const KILL_WAIT_MS = 250;
/** After the forced removal, how long the engine has to confirm the end before Ferry stops waiting. */
const REMOVE_WAIT_MS = 250;
/** How long a call to the engine may take once the container has exited, before it counts as unanswered. */
const ENGINE_ANSWER_MS = 2000;
const MiB = 1024 * 1024;
const PRESENCE_TTL_MS = 2000;
const PRESENCE_ENTRIES = 1024;

export const containerName = (executionId: string): string => `ferry-${executionId}`;

/** What a stop needs to know of a container this server is waiting on. */
interface Watch {
  /** Resolves when the engine reports the container's end. */
  readonly exited: Promise<void>;
  markExited(): void;
  /** Resolves when a stop gives up waiting for the engine. */
  readonly abandoned: Promise<void>;
  abandon(): void;
}

function newWatch(): Watch {
  let markExited = () => {};
  let abandon = () => {};
  const exited = new Promise<void>((resolve) => {
    markExited = resolve;
  });
  const abandoned = new Promise<void>((resolve) => {
    abandon = resolve;
  });
  return { exited, markExited, abandoned, abandon };
}

interface DockerState {
  readonly Running: boolean;
  readonly ExitCode: number;
  readonly OOMKilled: boolean;
  readonly StartedAt: string;
  readonly Status: string;
  readonly Error?: string;
}

export class DockerBackend implements ComputeBackend {
  readonly platform = 'docker' as const;
  private readonly book: LocalTaskBook;
  private readonly stopping = new Set<string>();
  private readonly watches = new Map<string, Watch>();
  private readonly presence = new Map<string, { present: boolean; at: number }>();

  constructor(
    private readonly docker: Docker,
    /** This server's identity (kept in its data directory); its containers carry it. */
    private readonly serverId: string,
    objects: ObjectStore,
    emit: TaskEventSink,
    private readonly log: Logger,
    /**
     * Keep a journal of each job's output in the engine (the `local` log driver), so a
     * server restarted mid-run can replay it. It costs throughput on output made of very
     * many short lines, which the engine journals one line at a time.
     */
    private readonly outputJournal = true,
    /**
     * Whether an image missing from the host may be pulled (its registry is allowed). The bid
     * already checked, but an image present then may have been removed before the launch.
     */
    private readonly mayPull: (image: string) => string | undefined = () => undefined,
  ) {
    this.book = new LocalTaskBook(objects, emit, log, (task) => {
      void this.escalate(task.taskId, TIMEOUT_GRACE_MS);
    });
  }

  /**
   * Whether the image is already on this host, from the engine's image store only (never
   * a registry). Answers are kept briefly, so a burst of bids on one image asks once.
   */
  async imagePresent(image: string): Promise<boolean> {
    const now = Date.now();
    const known = this.presence.get(image);
    if (known !== undefined && now - known.at < PRESENCE_TTL_MS) return known.present;
    let present = false;
    try {
      await this.docker.getImage(image).inspect();
      present = true;
    } catch {
      // Not there, or the engine could not say: either way the image is not known to be here.
    }
    if (this.presence.size >= PRESENCE_ENTRIES) this.presence.clear();
    this.presence.set(image, { present, at: now });
    return present;
  }

  /** Answers whether an engine is reachable, for choosing the backend at start. */
  static async reachable(docker: Docker): Promise<boolean> {
    try {
      await docker.ping();
      return true;
    } catch {
      return false;
    }
  }

  async launch(execution: Execution, constraints: ResolvedConstraints): Promise<{ taskId: string }> {
    const taskId = `${TASK_PREFIX}${execution.id}`;
    if (this.book.has(taskId)) return { taskId };
    const task = this.book.open(taskId, execution);
    // Like RunTask: accepted now, the rest (pull, create, start) is reported through events.
    void this.run(task, execution, constraints).catch((error) => {
      this.log.error('container run failed', { taskId, error });
      this.book.failedToStart(task, `could not run the container: ${messageOf(error)}`);
    });
    return { taskId };
  }

  private async run(task: LocalTask, execution: Execution, constraints: ResolvedConstraints): Promise<void> {
    const { spec } = execution;
    const name = containerName(execution.id);
    const pulled = await this.ensureImage(spec.image);
    if (pulled !== undefined) {
      this.book.failedToStart(task, pulled);
      return;
    }
    let container: Docker.Container;
    try {
      container = await this.docker.createContainer({
        name,
        Image: spec.image,
        // The command is the whole argv: the image's entrypoint does not wrap it.
        Entrypoint: spec.command.slice(0, 1),
        Cmd: spec.command.slice(1),
        Env: Object.entries(spec.env).map(([key, value]) => `${key}=${value}`),
        ...(spec.workdir === undefined ? {} : { WorkingDir: spec.workdir }),
        Labels: {
          [LABEL_EXECUTION]: execution.id,
          [LABEL_SERVER]: this.serverId,
          'ferry.task': task.taskId,
        },
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
        OpenStdin: false,
        HostConfig: {
          NanoCpus: Math.round(constraints.cpu * 1e9),
          Memory: constraints.memoryMiB * MiB,
          MemorySwap: constraints.memoryMiB * MiB,
          NetworkMode: spec.network === 'egress' ? 'bridge' : 'none',
          PidsLimit: 4096,
          // A bounded journal of the output, replayed only if the server restarts mid-run.
          LogConfig: this.outputJournal
            ? { Type: 'local', Config: { 'max-size': '64m', 'max-file': '2' } }
            : { Type: 'none', Config: {} },
        },
      });
    } catch (error) {
      if (statusOf(error) === 409) {
        // A container from an earlier attempt at this launch: carry on with it.
        await this.adopt(task, this.docker.getContainer(name));
        return;
      }
      this.book.failedToStart(task, `could not create the container: ${messageOf(error)}`);
      return;
    }
    const stream = (await container.attach({
      stream: true,
      stdout: true,
      stderr: true,
    })) as unknown as Readable;
    const captured = demux(stream, task);
    try {
      await container.start();
    } catch (error) {
      await container.remove({ force: true }).catch(() => undefined);
      this.book.failedToStart(task, `could not start the container: ${messageOf(error)}`);
      return;
    }
    this.watchFor(task.taskId);
    this.book.markRunning(task);
    await this.awaitEnd(task, container, stream, captured);
  }

  /** Takes over a container this server did not start (or started before a restart). */
  private async adopt(task: LocalTask, container: Docker.Container): Promise<void> {
    const state = ((await container.inspect()) as { State: DockerState }).State;
    if (state.Status === 'created') {
      await container.remove({ force: true });
      this.book.failedToStart(task, 'the container was created but never started; it was removed');
      return;
    }
    if (state.Running) {
      // The deadline counts from the container's start, as the engine recorded it.
      this.watchFor(task.taskId);
      this.book.markRunning(task, state.StartedAt);
      const stream = (await container.attach({
        stream: true,
        logs: true,
        stdout: true,
        stderr: true,
      })) as unknown as Readable;
      await this.awaitEnd(task, container, stream, demux(stream, task));
      return;
    }
    task.startedAt = state.StartedAt;
    const logs = (await container.logs({ follow: true, stdout: true, stderr: true })) as unknown as Readable;
    await this.awaitEnd(task, container, logs, demux(logs, task));
  }

  private watchFor(taskId: string): Watch {
    let watch = this.watches.get(taskId);
    if (watch === undefined) {
      watch = newWatch();
      this.watches.set(taskId, watch);
    }
    return watch;
  }

  private async awaitEnd(
    task: LocalTask,
    container: Docker.Container,
    output: Readable,
    captured: Promise<void>,
  ): Promise<void> {
    const watch = this.watchFor(task.taskId);
    // A stop asked for before the container ran could not reach it: it applies now.
    if (task.stopReason !== undefined && !task.timedOut) void this.escalate(task.taskId, CANCEL_GRACE_MS);
    const waited = container.wait().then(
      (reply) => reply as { StatusCode: number },
      (error) => {
        if (statusOf(error) !== 404)
          this.log.warn('waiting on the container failed', { taskId: task.taskId, error });
        return undefined;
      },
    );
    const ended = await Promise.race([
      waited.then((reply) => ({ reply })),
      watch.abandoned.then(() => undefined),
    ]);
    // The job's end: what follows (capture, inspect, removal) is the engine's time, not the job's.
    const endedAt = new Date().toISOString();
    watch.markExited();
    if (ended === undefined) {
      // The engine has not confirmed the end: report what was captured, keep the capacity.
      output.destroy();
      this.log.warn('the engine did not confirm the container stopped; ending the task without it', {
        taskId: task.taskId,
      });
      await this.book.finish(task, { exitCode: null, signal: null, endedAt, resourcesHeld: true });
      this.removeUntilGone(task, container);
      return;
    }
    await captured.catch((error) =>
      this.log.warn('output capture ended with an error', { taskId: task.taskId, error }),
    );
    const state = await answered(
      container.inspect().then((info) => (info as { State: DockerState }).State),
      ENGINE_ANSWER_MS,
    );
    const removed = await this.remove(task, container);
    const exitCode = state?.ExitCode ?? ended.reply?.StatusCode ?? null;
    await this.book.finish(task, {
      exitCode,
      signal: exitCode !== null && exitCode > 128 ? signalName(exitCode - 128) : null,
      endedAt,
      ...(state?.OOMKilled
        ? { containerReason: 'OutOfMemoryError: Container killed due to memory usage' }
        : {}),
      ...(removed ? {} : { resourcesHeld: true }),
    });
    if (!removed) this.removeUntilGone(task, container);
    else this.forget(task.taskId);
  }

  /** Removes the container; true once it is gone, false if the engine did not answer in time. */
  private async remove(task: LocalTask, container: Docker.Container): Promise<boolean> {
    const outcome = await answered(
      container.remove({ force: true }).then(
        () => true,
        (error) => {
          if (statusOf(error) === 404) return true;
          this.log.warn('could not remove the container', { taskId: task.taskId, error: messageOf(error) });
          return false;
        },
      ),
      ENGINE_ANSWER_MS,
    );
    return outcome === true;
  }

  /** Keeps removing a container whose task ended with its resources held, then reports it gone. */
  private removeUntilGone(task: LocalTask, container: Docker.Container, delayMs = 1000): void {
    setTimeout(async () => {
      if (await this.remove(task, container)) {
        this.forget(task.taskId);
        this.book.released(task);
        return;
      }
      this.removeUntilGone(task, container, Math.min(delayMs * 2, 30_000));
    }, delayMs).unref();
  }

  private forget(taskId: string): void {
    this.stopping.delete(taskId);
    this.watches.delete(taskId);
  }

  /**
   * Stops a container without waiting on the engine's answers, which may never come for a
   * container the engine struggles to stop (a fork bomb at its pid limit): SIGTERM, SIGKILL after
   * `graceMs`, then a forced removal; if the engine still has not reported the end, the task
   * is reported ended anyway (see `awaitEnd`).
   */
  private async escalate(taskId: string, graceMs: number): Promise<void> {
    const container = this.docker.getContainer(containerName(taskId.slice(TASK_PREFIX.length)));
    const watch = this.watches.get(taskId);
    if (watch === undefined) {
      // Not started yet, or not this server's to watch: the engine's own stop, and `awaitEnd`
      // stops it again if it does start.
      void container.stop({ t: Math.ceil(graceMs / 1000) }).catch(() => undefined);
      return;
    }
    if (this.stopping.has(taskId)) return;
    this.stopping.add(taskId);
    const exitedWithin = (ms: number) =>
      Promise.race([watch.exited.then(() => true), sleep(ms).then(() => false)]);
    this.signal(taskId, container, 'SIGTERM');
    if (await exitedWithin(graceMs)) return;
    this.signal(taskId, container, 'SIGKILL');
    if (await exitedWithin(KILL_WAIT_MS)) return;
    void container.remove({ force: true }).catch(() => undefined);
    if (await exitedWithin(REMOVE_WAIT_MS)) return;
    watch.abandon();
  }

  private signal(taskId: string, container: Docker.Container, signal: 'SIGTERM' | 'SIGKILL'): void {
    void container.kill({ signal }).catch((error) => {
      // 404: already gone; 409: no longer running. Both mean the signal is not needed.
      const status = statusOf(error);
      if (status !== 404 && status !== 409) {
        this.log.warn(`could not send ${signal} to the container`, { taskId, error: messageOf(error) });
      }
    });
  }

  /** undefined when the image is there; otherwise why it could not be had. */
  private async ensureImage(image: string): Promise<string | undefined> {
    try {
      await this.docker.getImage(image).inspect();
      return undefined;
    } catch (error) {
      if (statusOf(error) !== 404) return `could not inspect image ${image}: ${messageOf(error)}`;
    }
    const refused = this.mayPull(image);
    if (refused !== undefined)
      return `CannotPullContainerError: image ${image} is not on this host: ${refused}`;
    try {
      const progress = await this.docker.pull(image);
      await new Promise<void>((resolve, reject) =>
        this.docker.modem.followProgress(progress, (error: Error | null) =>
          error ? reject(error) : resolve(),
        ),
      );
      return undefined;
    } catch (error) {
      return `CannotPullContainerError: image ${image} is not on this host and could not be pulled: ${messageOf(error)}`;
    }
  }

  async stop(taskId: string, reason: string): Promise<void> {
    const task = this.book.get(taskId);
    if (task !== undefined) {
      if (task.status === 'STOPPED' || task.status === 'DEPROVISIONING') return;
      task.stopReason ??= reason;
    }
    // The caller need not wait: the stop event reports the end.
    void this.escalate(taskId, task?.timedOut === true ? TIMEOUT_GRACE_MS : CANCEL_GRACE_MS);
  }

  async describe(taskIds: readonly string[]): Promise<readonly TaskStatus[]> {
    const known = this.book.describe(taskIds, (taskId) => taskId.slice(TASK_PREFIX.length));
    const missing = known.filter((s) => s.lastStatus === 'MISSING');
    if (missing.length === 0) return known;
    // Not in this server's book: ask the engine before calling anything lost.
    const containers = await this.ownContainers();
    const present = new Set(containers.map((c) => c.Labels[LABEL_EXECUTION]));
    return known.map((s) =>
      s.lastStatus === 'MISSING' && present.has(s.executionId) ? { ...s, lastStatus: 'RUNNING' as const } : s,
    );
  }

  async readLive(
    taskId: string,
    stream: 'stdout' | 'stderr',
    offset: number,
    maxBytes: number,
  ): Promise<LiveRead | undefined> {
    return this.book.readLive(taskId, stream, offset, maxBytes);
  }

  /**
   * After a restart: adopts this server's containers of executions still active, and removes
   * its containers whose execution has already ended. Other servers' containers are not touched.
   * A container of an earlier Ferry, made before containers carried their server, is this
   * server's only when its execution is active in this server's own store: it is adopted; any
   * other such container may be another server's and is left alone.
   */
  async recover(
    activeExecutions: ReadonlyMap<string, Execution>,
  ): Promise<{ adopted: number; removed: number }> {
    const containers = await this.docker.listContainers({
      all: true,
      filters: { label: [LABEL_EXECUTION] },
    });
    let adopted = 0;
    let removed = 0;
    for (const info of containers) {
      const executionId = info.Labels[LABEL_EXECUTION] ?? '';
      const execution = activeExecutions.get(executionId);
      const server = info.Labels[LABEL_SERVER];
      if (server === undefined ? execution === undefined : server !== this.serverId) continue;
      const container = this.docker.getContainer(info.Id);
      const taskId = `${TASK_PREFIX}${executionId}`;
      if (execution === undefined || this.book.has(taskId)) {
        if (execution === undefined) {
          await container.remove({ force: true }).catch(() => undefined);
          removed++;
        }
        continue;
      }
      const task = this.book.open(taskId, execution, true);
      adopted++;
      void this.adopt(task, container).catch((error) => {
        this.log.error('could not adopt container', { taskId, error });
        this.book.failedToStart(task, `lost after a restart: ${messageOf(error)}`);
      });
    }
    return { adopted, removed };
  }

  /** Containers this server made, in any status. */
  private ownContainers(): Promise<Docker.ContainerInfo[]> {
    return this.docker.listContainers({
      all: true,
      filters: { label: [LABEL_EXECUTION, `${LABEL_SERVER}=${this.serverId}`] },
    });
  }
}

/**
 * Splits Docker's multiplexed attach stream (8-byte frame headers: stream id, size) into
 * the task's stdout and stderr captures, byte for byte.
 */
function demux(stream: Readable, task: LocalTask): Promise<void> {
  let pending: Buffer = Buffer.alloc(0);
  let frameLeft = 0;
  let target: 'stdout' | 'stderr' = 'stdout';
  return new Promise((resolve, reject) => {
    stream.on('data', (chunk: Buffer) => {
      let data = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
      pending = Buffer.alloc(0);
      while (data.length > 0) {
        if (frameLeft === 0) {
          if (data.length < 8) {
            pending = Buffer.from(data);
            return;
          }
          target = data[0] === 2 ? 'stderr' : 'stdout';
          frameLeft = data.readUInt32BE(4);
          data = data.subarray(8);
          continue;
        }
        const take = Math.min(frameLeft, data.length);
        task[target].write(data.subarray(0, take));
        frameLeft -= take;
        data = data.subarray(take);
      }
    });
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', reject);
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The promise's value, or undefined if it does not settle well within `ms`. */
function answered<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  return Promise.race([promise.catch(() => undefined), late]).finally(() => clearTimeout(timer));
}

const statusOf = (error: unknown): number | undefined => (error as { statusCode?: number }).statusCode;

function signalName(signal: number): string | null {
  const names: Record<number, string> = {
    1: 'SIGHUP',
    2: 'SIGINT',
    6: 'SIGABRT',
    9: 'SIGKILL',
    15: 'SIGTERM',
  };
  return names[signal] ?? null;
}
