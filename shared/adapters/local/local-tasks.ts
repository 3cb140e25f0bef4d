// What the Docker and process backends share: the book of tasks this server runs, output
// capture per task, the result files and manifest (written last), and task state change
// events in ECS's shape so the same `task-events` handler applies them.
import { randomUUID } from 'node:crypto';
import { storeResult } from '../../capture/result-writer.ts';
import { StreamCapture } from '../../capture/stream-capture.ts';
import type { Execution } from '../../domain/execution.ts';
import type { OutputLimits } from '../../domain/job-spec.ts';
import {
  JOB_CONTAINER,
  type TaskStateChangeDetail,
  type TaskStateChangeEvent,
  taskStateChange,
} from '../../domain/task-event.ts';
import type { Logger } from '../../logger.ts';
import type { LiveRead, ObjectStore, TaskStatus } from '../../ports.ts';

export type TaskEventSink = (event: TaskStateChangeEvent) => void;

export interface LocalTask {
  readonly taskId: string;
  readonly executionId: string;
  readonly stdout: StreamCapture;
  readonly stderr: StreamCapture;
  readonly keep: OutputLimits['keep'];
  status: 'PENDING' | 'RUNNING' | 'STOPPED';
  version: number;
  startedAt: string | null;
  stopReason?: string;
  /** Set when the task was picked up again after a restart: output may be incomplete. */
  recovered: boolean;
}

export interface TaskEnding {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly containerReason?: string;
  readonly stopCode?: string;
  readonly stoppedReason?: string;
}

/** How long a finished task stays in the book, so `describe` does not call it lost too early. */
const KEEP_STOPPED_MS = 10 * 60 * 1000;

export class LocalTaskBook {
  private readonly tasks = new Map<string, LocalTask>();

  constructor(
    private readonly objects: ObjectStore,
    private readonly emit: TaskEventSink,
    private readonly log: Logger,
  ) {}

  open(taskId: string, execution: Execution, recovered = false): LocalTask {
    const existing = this.tasks.get(taskId);
    if (existing !== undefined) return existing;
    const limits = execution.spec.outputLimits;
    const task: LocalTask = {
      taskId,
      executionId: execution.id,
      stdout: new StreamCapture({
        storedBytes: limits.stdoutBytes,
        inlineBytes: limits.inlineBytes,
        keep: limits.keep,
      }),
      stderr: new StreamCapture({
        storedBytes: limits.stderrBytes,
        inlineBytes: limits.inlineBytes,
        keep: limits.keep,
      }),
      keep: limits.keep,
      status: 'PENDING',
      // A task picked up after a restart goes on from the events its execution already applied;
      // starting again at 0 would make its STOPPED event look stale and be ignored.
      version: recovered ? (execution.task?.lastEventVersion ?? 0) : 0,
      startedAt: null,
      recovered,
    };
    this.tasks.set(taskId, task);
    return task;
  }

  get(taskId: string): LocalTask | undefined {
    return this.tasks.get(taskId);
  }

  has(taskId: string): boolean {
    return this.tasks.has(taskId);
  }

  running(): LocalTask[] {
    return [...this.tasks.values()].filter((t) => t.status !== 'STOPPED');
  }

  markRunning(task: LocalTask, startedAt = new Date().toISOString()): void {
    task.status = 'RUNNING';
    task.startedAt = startedAt;
    this.publish(task, { lastStatus: 'RUNNING', startedAt });
  }

  /**
   * Stores stdout, stderr and then the manifest (its presence means the result is complete),
   * and reports the task STOPPED. Called once the job's process is gone.
   */
  async finish(task: LocalTask, ending: TaskEnding): Promise<void> {
    if (task.status === 'STOPPED') return;
    const endedAt = new Date().toISOString();
    try {
      await storeResult(this.objects, task.executionId, task, task.keep, {
        exitCode: ending.exitCode,
        signal: ending.signal,
        partial: task.stopReason !== undefined || task.recovered,
        startedAt: task.startedAt,
        endedAt,
      });
    } catch (error) {
      // The stop event still goes out: the execution ends without a result rather than
      // hanging in RUNNING.
      this.log.error('could not store the result', { executionId: task.executionId, error });
    }
    task.status = 'STOPPED';
    setTimeout(() => this.tasks.delete(task.taskId), KEEP_STOPPED_MS).unref();
    this.publish(task, {
      lastStatus: 'STOPPED',
      stopCode:
        ending.stopCode ?? (task.stopReason === undefined ? 'EssentialContainerExited' : 'UserInitiated'),
      stoppedReason: ending.stoppedReason ?? task.stopReason ?? 'Essential container in task exited',
      stoppedAt: endedAt,
      containers: [
        {
          name: JOB_CONTAINER,
          lastStatus: 'STOPPED',
          ...(ending.exitCode === null ? {} : { exitCode: ending.exitCode }),
          ...(ending.containerReason === undefined ? {} : { reason: ending.containerReason }),
        },
      ],
    });
  }

  /** Reports a task that never started (no image, no such program). */
  failedToStart(task: LocalTask, reason: string): void {
    if (task.status === 'STOPPED') return;
    task.status = 'STOPPED';
    setTimeout(() => this.tasks.delete(task.taskId), KEEP_STOPPED_MS).unref();
    this.publish(task, {
      lastStatus: 'STOPPED',
      stopCode: 'TaskFailedToStart',
      stoppedReason: reason,
      stoppedAt: new Date().toISOString(),
      containers: [{ name: JOB_CONTAINER, lastStatus: 'STOPPED', reason }],
    });
  }

  describe(taskIds: readonly string[], executionOf: (taskId: string) => string): TaskStatus[] {
    return taskIds.map((taskId) => {
      const task = this.tasks.get(taskId);
      return {
        taskId,
        executionId: task?.executionId ?? executionOf(taskId),
        lastStatus: task === undefined ? 'MISSING' : task.status,
      };
    });
  }

  readLive(
    taskId: string,
    stream: 'stdout' | 'stderr',
    offset: number,
    maxBytes: number,
  ): LiveRead | undefined {
    const task = this.tasks.get(taskId);
    if (task === undefined || task.status === 'STOPPED') return undefined;
    return task[stream].readRange(offset, maxBytes);
  }

  private publish(
    task: LocalTask,
    detail: Omit<TaskStateChangeDetail, 'taskArn' | 'version' | 'startedBy'>,
  ): void {
    task.version++;
    const event = taskStateChange(
      {
        taskArn: task.taskId,
        startedBy: task.executionId,
        version: task.version,
        desiredStatus: detail.lastStatus,
        ...detail,
      },
      { id: randomUUID(), time: new Date().toISOString() },
    );
    this.emit(event);
  }
}
