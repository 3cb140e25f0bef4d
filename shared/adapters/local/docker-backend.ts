// ComputeBackend on a Docker Engine. Each job is one container, named and labelled after
// its execution, with the bid's CPU and memory applied and no network unless asked. The
// server attaches to it for byte-exact capture; containers outlive a server restart, and
// `recover` adopts them again (output is replayed from the engine's local log driver).
// Every container also carries the identity of the server that made it: several servers
// may share one engine, and each adopts, describes and removes only its own.
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { Execution, ResolvedConstraints } from '../../domain/execution.ts';
import type { Logger } from '../../logger.ts';
import type { ComputeBackend, LiveRead, ObjectStore, TaskStatus } from '../../ports.ts';
import { type LocalTask, LocalTaskBook, type TaskEventSink } from './local-tasks.ts';

export const LABEL_EXECUTION = 'ferry.execution';
export const LABEL_SERVER = 'ferry.server';
const TASK_PREFIX = 'docker/';
const STOP_GRACE_SECONDS = 3;
const MiB = 1024 * 1024;
const PRESENCE_TTL_MS = 2000;
const PRESENCE_ENTRIES = 1024;

export const containerName = (executionId: string): string => `ferry-${executionId}`;

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
    this.book = new LocalTaskBook(objects, emit, log);
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
    this.book.markRunning(task);
    await this.awaitEnd(task, container, captured);
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
      this.book.markRunning(task, state.StartedAt);
      const stream = (await container.attach({
        stream: true,
        logs: true,
        stdout: true,
        stderr: true,
      })) as unknown as Readable;
      await this.awaitEnd(task, container, demux(stream, task));
      return;
    }
    task.startedAt = state.StartedAt;
    const logs = (await container.logs({ follow: true, stdout: true, stderr: true })) as unknown as Readable;
    await this.awaitEnd(task, container, demux(logs, task));
  }

  private async awaitEnd(
    task: LocalTask,
    container: Docker.Container,
    captured: Promise<void>,
  ): Promise<void> {
    const waited = (await container.wait()) as { StatusCode: number };
    await captured.catch((error) =>
      this.log.warn('output capture ended with an error', { taskId: task.taskId, error }),
    );
    const state = ((await container.inspect()) as { State: DockerState }).State;
    await container.remove({ force: true }).catch((error) => {
      if (statusOf(error) !== 404)
        this.log.warn('could not remove the container', { taskId: task.taskId, error });
    });
    this.stopping.delete(task.taskId);
    const exitCode = state.ExitCode ?? waited.StatusCode;
    await this.book.finish(task, {
      exitCode,
      signal: exitCode > 128 ? signalName(exitCode - 128) : null,
      ...(state.OOMKilled
        ? { containerReason: 'OutOfMemoryError: Container killed due to memory usage' }
        : {}),
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
      if (task.status === 'STOPPED') return;
      task.stopReason ??= reason;
    }
    if (this.stopping.has(taskId)) return;
    this.stopping.add(taskId);
    const name = containerName(taskId.slice(TASK_PREFIX.length));
    // The engine answers a stop only once the container is gone (up to the grace period);
    // the caller need not wait for that: the stop event reports it.
    void this.docker
      .getContainer(name)
      .stop({ t: STOP_GRACE_SECONDS })
      .catch((error) => {
        this.stopping.delete(taskId);
        // 304: already stopped; 404: already gone. Both mean the stop is done.
        const status = statusOf(error);
        if (status !== 304 && status !== 404) {
          // The sweeper asks again when no stop event follows.
          this.log.warn('could not stop the container', { taskId, error: messageOf(error) });
        }
      });
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
   */
  async recover(
    activeExecutions: ReadonlyMap<string, Execution>,
  ): Promise<{ adopted: number; removed: number }> {
    const containers = await this.ownContainers();
    let adopted = 0;
    let removed = 0;
    for (const info of containers) {
      const executionId = info.Labels[LABEL_EXECUTION] ?? '';
      const execution = activeExecutions.get(executionId);
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

const statusOf = (error: unknown): number | undefined => (error as { statusCode?: number }).statusCode;

function messageOf(error: unknown): string {
  const json = (error as { json?: { message?: string } }).json;
  if (json?.message) return json.message;
  return error instanceof Error ? error.message : String(error);
}

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
