// What the Docker and process backends share: the book of tasks this server runs, output
// capture per task, each task's deadline (armed when it starts running, so a timeout is
// enforced when it falls due rather than at the next sweep), the result files and manifest
// (written last), and task state change events in ECS's shape so the same `task-events`
// handler applies them.
import { randomUUID } from 'node:crypto';
import { storeResult } from '../../capture/result-writer.ts';
import type { SpoolFile } from '../../capture/spool.ts';
import { StreamCapture } from '../../capture/stream-capture.ts';
import type { Execution, OutputResult, StepResult } from '../../domain/execution.ts';
import type { OutputLimits } from '../../domain/job-spec.ts';
import {
  JOB_CONTAINER,
  jobEnded,
  RESULT_NOT_STORED,
  type TaskStateChangeDetail,
  type TaskStateChangeEvent,
  taskStateChange,
} from '../../domain/task-event.ts';
import type { Logger } from '../../logger.ts';
import type { LiveRead, ObjectStore, TaskStatus } from '../../ports.ts';

export type TaskEventSink = (event: TaskStateChangeEvent) => void;

/** SIGTERM to SIGKILL for a job past its timeout: short, so the timeout holds within a second. */
export const TIMEOUT_GRACE_MS = 400;
/** SIGTERM to SIGKILL for a cancelled job: time to shut down cleanly. */
export const CANCEL_GRACE_MS = 3000;

/** Called when a running task reaches its timeout; the backend stops it. */
export type DeadlineHandler = (task: LocalTask) => void;

export interface LocalTask {
  readonly taskId: string;
  readonly executionId: string;
  readonly stdout: StreamCapture;
  readonly stderr: StreamCapture;
  readonly keep: OutputLimits['keep'];
  /** DEPROVISIONING: the job has ended but its resources are not given back yet. */
  status: 'PENDING' | 'RUNNING' | 'DEPROVISIONING' | 'STOPPED';
  version: number;
  startedAt: string | null;
  stopReason?: string;
  /**
   * Set when the job's output is kept by its wrapper in spool files rather than written to
   * `stdout` and `stderr` here: live reads and the stored result then come from the spool.
   */
  spool?: { readonly stdout: SpoolFile; readonly stderr: SpoolFile };
  /**
   * Set when the task was picked up again after a restart: output may be incomplete, unless a
   * spool kept it all along.
   */
  recovered: boolean;
  readonly timeoutSeconds: number;
  /** Set once the task reached its deadline; the result then says it timed out. */
  timedOut: boolean;
  deadline?: NodeJS.Timeout;
  /**
   * Stores the job's outputs, once its command has exited; before the manifest is written. With
   * `deliver`, those with a url go there too.
   */
  collect?: (sink: ObjectStore, deliver: boolean) => Promise<OutputResult[]>;
  /** Removes what the job's inputs and outputs took on this machine, once the result is stored. */
  cleanup?: () => Promise<void>;
  /** Stops the staging of inputs, when a stop comes before the job ran. */
  abortStaging?: AbortController;
  /** A job with steps: how each that has run so far ended. */
  steps?: StepResult[];
  /** How the task ended, as its stop events said: what `describe` reports for it. */
  ending?: Pick<TaskStateChangeDetail, 'stopCode' | 'stoppedReason' | 'stoppedAt' | 'containers'>;
}

export interface TaskEnding {
  readonly exitCode: number | null;
  readonly signal: string | null;
  /**
   * When the job's process ended, as the backend saw it; storing the result and the engine's
   * clean-up come after and are not the job's run time. Now, if not given.
   */
  readonly endedAt?: string;
  readonly containerReason?: string;
  readonly stopCode?: string;
  readonly stoppedReason?: string;
  /**
   * The job has ended but the backend could not free what it holds (a container the engine has
   * not removed): reported as DEPROVISIONING, so the execution ends and its capacity stays held
   * until `released` reports the task STOPPED.
   */
  readonly resourcesHeld?: boolean;
}

/** How long a finished task stays in the book, so `describe` does not call it lost too early. */
const KEEP_STOPPED_MS = 10 * 60 * 1000;

export class LocalTaskBook {
  private readonly tasks = new Map<string, LocalTask>();

  constructor(
    private readonly objects: ObjectStore,
    private readonly emit: TaskEventSink,
    private readonly log: Logger,
    private readonly onDeadline: DeadlineHandler = () => undefined,
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
      timeoutSeconds: execution.spec.timeoutSeconds,
      timedOut: false,
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

  /** Reports the task RUNNING and arms its deadline, counted from when it really started. */
  markRunning(task: LocalTask, startedAt = new Date().toISOString()): void {
    task.status = 'RUNNING';
    task.startedAt = startedAt;
    const due = Date.parse(startedAt) + task.timeoutSeconds * 1000 - Date.now();
    clearTimeout(task.deadline);
    task.deadline = setTimeout(
      () => {
        if (task.status !== 'RUNNING') return;
        task.timedOut = true;
        task.stopReason ??= `timed out after ${task.timeoutSeconds}s`;
        this.onDeadline(task);
      },
      Math.max(0, due),
    );
    task.deadline.unref();
    this.publish(task, { lastStatus: 'RUNNING', startedAt });
  }

  /**
   * Stores stdout, stderr and then the manifest (its presence means the result is complete),
   * and reports the task STOPPED. Called once the job's process is gone.
   */
  async finish(task: LocalTask, ending: TaskEnding): Promise<void> {
    if (task.status === 'STOPPED' || task.status === 'DEPROVISIONING') return;
    clearTimeout(task.deadline);
    const endedAt = ending.endedAt ?? new Date().toISOString();
    let containerReason = ending.containerReason;
    try {
      const captures =
        task.spool === undefined
          ? task
          : { stdout: await task.spool.stdout.restore(), stderr: await task.spool.stderr.restore() };
      // Whatever the exit code, and after a timeout or a cancel too (the result says partial).
      // Delivered only from a job that ended by itself, well: never a cut or failed run's outputs.
      const deliver = task.stopReason === undefined && ending.exitCode === 0;
      const outputs = task.collect === undefined ? undefined : await task.collect(this.objects, deliver);
      await storeResult(this.objects, task.executionId, captures, task.keep, {
        ...(outputs === undefined ? {} : { outputs }),
        exitCode: ending.exitCode,
        signal: ending.signal,
        partial: task.stopReason !== undefined || (task.recovered && task.spool === undefined),
        ...(task.timedOut ? { timedOut: true } : {}),
        startedAt: task.startedAt,
        endedAt,
        ...(task.steps === undefined ? {} : { steps: task.steps }),
      });
    } catch (error) {
      // The stop event still goes out, saying the output is lost: the execution ends FAILED
      // rather than hanging in RUNNING or passing for a success.
      this.log.error('could not store the result', { executionId: task.executionId, error });
      containerReason = `${RESULT_NOT_STORED}: the result could not be stored: ${messageOf(error)}`;
    }
    await task
      .cleanup?.()
      .catch((error) =>
        this.log.warn('could not remove the job’s data directory', { executionId: task.executionId, error }),
      );
    task.status = ending.resourcesHeld === true ? 'DEPROVISIONING' : 'STOPPED';
    if (task.status === 'STOPPED') this.forgetLater(task);
    this.publish(task, {
      lastStatus: task.status,
      desiredStatus: 'STOPPED',
      stopCode:
        ending.stopCode ?? (task.stopReason === undefined ? 'EssentialContainerExited' : 'UserInitiated'),
      stoppedReason: ending.stoppedReason ?? task.stopReason ?? 'Essential container in task exited',
      stoppedAt: endedAt,
      containers: [
        {
          name: JOB_CONTAINER,
          lastStatus: 'STOPPED',
          ...(ending.exitCode === null ? {} : { exitCode: ending.exitCode }),
          ...(containerReason === undefined ? {} : { reason: containerReason }),
        },
      ],
    });
  }

  /** Reports a task that ended with its resources held (DEPROVISIONING) as gone at last. */
  released(task: LocalTask): void {
    if (task.status !== 'DEPROVISIONING') return;
    task.status = 'STOPPED';
    this.forgetLater(task);
    this.publish(task, { lastStatus: 'STOPPED', stoppedAt: new Date().toISOString() });
  }

  /**
   * Reports a task of an earlier server run that could not be picked up again (a plain process
   * does not survive its server): it ends without an exit code or a result, for `reason`.
   */
  lost(task: LocalTask, reason: string): void {
    this.endWithoutResult(task, 'TaskLost', reason, {});
  }

  /** Reports a task that never started (no image, no such program). */
  failedToStart(task: LocalTask, reason: string): void {
    this.endWithoutResult(task, 'TaskFailedToStart', reason, { reason });
  }

  private endWithoutResult(
    task: LocalTask,
    stopCode: 'TaskLost' | 'TaskFailedToStart',
    reason: string,
    container: { reason?: string },
  ): void {
    if (task.status === 'STOPPED') return;
    void task
      .cleanup?.()
      .catch((error) =>
        this.log.warn('could not remove the job’s data directory', { executionId: task.executionId, error }),
      );
    clearTimeout(task.deadline);
    task.status = 'STOPPED';
    this.forgetLater(task);
    this.publish(task, {
      lastStatus: 'STOPPED',
      stopCode,
      stoppedReason: reason,
      stoppedAt: new Date().toISOString(),
      containers: [{ name: JOB_CONTAINER, lastStatus: 'STOPPED', ...container }],
    });
  }

  private forgetLater(task: LocalTask): void {
    setTimeout(() => this.tasks.delete(task.taskId), KEEP_STOPPED_MS).unref();
  }

  describe(taskIds: readonly string[], executionOf: (taskId: string) => string): TaskStatus[] {
    return taskIds.map((taskId) => {
      const task = this.tasks.get(taskId);
      return {
        taskId,
        executionId: task?.executionId ?? executionOf(taskId),
        // Like ECS: a task winding down still holds its resources.
        lastStatus:
          task === undefined ? 'MISSING' : task.status === 'DEPROVISIONING' ? 'RUNNING' : task.status,
        ...(task?.status === 'STOPPED' ? task.ending : {}),
      };
    });
  }

  async readLive(
    taskId: string,
    stream: 'stdout' | 'stderr',
    offset: number,
    maxBytes: number,
  ): Promise<LiveRead | undefined> {
    const task = this.tasks.get(taskId);
    if (task === undefined || task.status === 'STOPPED' || task.status === 'DEPROVISIONING') return undefined;
    if (task.spool !== undefined) return task.spool[stream].readRange(offset, maxBytes);
    return task[stream].readRange(offset, maxBytes);
  }

  private publish(
    task: LocalTask,
    detail: Omit<TaskStateChangeDetail, 'taskArn' | 'version' | 'startedBy'>,
  ): void {
    task.version++;
    if (jobEnded(detail)) {
      // A later STOPPED (resources given back) adds to what the first stop event said.
      task.ending = {
        ...task.ending,
        ...(detail.stopCode === undefined ? {} : { stopCode: detail.stopCode }),
        ...(detail.stoppedReason === undefined ? {} : { stoppedReason: detail.stoppedReason }),
        ...(detail.stoppedAt === undefined ? {} : { stoppedAt: detail.stoppedAt }),
        ...(detail.containers === undefined ? {} : { containers: detail.containers }),
      };
    }
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

/** What went wrong, in one line: the Docker Engine's own message when it gave one. */
export function messageOf(error: unknown): string {
  const json = (error as { json?: { message?: string } } | undefined)?.json;
  if (json?.message) return json.message;
  return error instanceof Error ? error.message : String(error);
}
