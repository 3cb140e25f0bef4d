// ComputeBackend that runs jobs as plain processes, for machines without Docker. The
// image is not used and nothing is isolated: the job runs as the server's user with its
// network and file system. Ferry says so in every bid and at start.
import { type ChildProcess, spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { captureStream } from '../../capture/stream-capture.ts';
import type { Execution, ResolvedConstraints } from '../../domain/execution.ts';
import type { Logger } from '../../logger.ts';
import type { ComputeBackend, LiveRead, ObjectStore, TaskStatus } from '../../ports.ts';
import { LocalTaskBook, type TaskEventSink } from './local-tasks.ts';

const TASK_PREFIX = 'process/';
const STOP_GRACE_MS = 3000;

export class ProcessBackend implements ComputeBackend {
  readonly platform = 'process' as const;
  private readonly book: LocalTaskBook;
  private readonly children = new Map<string, ChildProcess>();

  constructor(
    objects: ObjectStore,
    emit: TaskEventSink,
    private readonly log: Logger,
    /** Where jobs without a workdir run; each gets its own directory below it. */
    private readonly workRoot: string = path.join(os.tmpdir(), 'ferry-jobs'),
    /** Variables a job inherits before its own env (PATH, so programs are found). */
    private readonly baseEnv: Readonly<Record<string, string>> = {},
  ) {
    this.book = new LocalTaskBook(objects, emit, log);
  }

  async launch(execution: Execution, _constraints: ResolvedConstraints): Promise<{ taskId: string }> {
    const taskId = `${TASK_PREFIX}${execution.id}`;
    if (this.book.has(taskId)) return { taskId }; // a redelivered launch: the task exists
    const task = this.book.open(taskId, execution);
    const cwd = execution.spec.workdir ?? path.join(this.workRoot, execution.id);
    await fsp.mkdir(cwd, { recursive: true });
    const [program = '', ...args] = execution.spec.command;
    const child = spawn(program, args, {
      cwd,
      env: { ...this.baseEnv, ...execution.spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so stop reaches everything the job started.
      detached: true,
    });
    this.children.set(taskId, child);
    const outputs = Promise.all([
      captureStream(child.stdout, task.stdout),
      captureStream(child.stderr, task.stderr),
    ]);
    child.once('spawn', () => this.book.markRunning(task));
    child.once('error', (error: NodeJS.ErrnoException) => {
      if (task.status !== 'PENDING') return;
      this.children.delete(taskId);
      const reason =
        error.code === 'ENOENT'
          ? `program not found: ${program}`
          : `could not start ${program}: ${error.message}`;
      this.book.failedToStart(task, reason);
    });
    child.once('close', (code, signal) => {
      this.children.delete(taskId);
      if (task.status === 'PENDING') return; // never started; reported by 'error'
      void outputs
        .catch((error) => this.log.warn('output capture ended with an error', { taskId, error }))
        .then(() =>
          this.book.finish(task, {
            exitCode: code ?? 128 + (os.constants.signals[signal as NodeJS.Signals] ?? 0),
            signal,
          }),
        );
    });
    return { taskId };
  }

  async stop(taskId: string, reason: string): Promise<void> {
    const child = this.children.get(taskId);
    const task = this.book.get(taskId);
    if (child?.pid === undefined || task === undefined || task.status === 'STOPPED') return;
    task.stopReason ??= reason;
    const group = -child.pid;
    signalGroup(group, 'SIGTERM');
    setTimeout(() => {
      if (this.children.has(taskId)) signalGroup(group, 'SIGKILL');
    }, STOP_GRACE_MS).unref();
  }

  async describe(taskIds: readonly string[]): Promise<readonly TaskStatus[]> {
    return this.book.describe(taskIds, (taskId) => taskId.slice(TASK_PREFIX.length));
  }

  async readLive(
    taskId: string,
    stream: 'stdout' | 'stderr',
    offset: number,
    maxBytes: number,
  ): Promise<LiveRead | undefined> {
    return this.book.readLive(taskId, stream, offset, maxBytes);
  }

  /** Jobs die with the server: processes cannot be adopted again after a restart. */
  async shutdown(): Promise<void> {
    for (const [taskId, child] of this.children) {
      if (child.pid !== undefined) signalGroup(-child.pid, 'SIGKILL');
      this.children.delete(taskId);
    }
  }
}

function signalGroup(group: number, signal: NodeJS.Signals): void {
  try {
    process.kill(group, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}
