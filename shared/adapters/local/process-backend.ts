// ComputeBackend that runs jobs as plain processes, for machines without Docker. The
// image is not used and nothing is isolated: the job runs as the server's user with its
// network and file system. Ferry says so in every bid and at start.
// Each job is its own process group, recorded on disk while it runs: a job ends with its first
// process (what it leaves in its group is killed, as a container's are), and a server started
// after a crash kills the groups its predecessor left and reports their executions FAILED.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { captureStream } from '../../capture/stream-capture.ts';
import type { Execution, ResolvedConstraints, StepResult } from '../../domain/execution.ts';
import { stepsOf } from '../../domain/job-spec.ts';
import { jobExitOf, stepLetsNextRun } from '../../domain/steps.ts';
import type { Logger } from '../../logger.ts';
import type { ComputeBackend, InputFetcher, LiveRead, ObjectStore, TaskStatus } from '../../ports.ts';
import type { DeliveryRoots } from '../../staging/deliver.ts';
import { InputSources } from '../../staging/inputs.ts';
import { LocalJobData } from './job-data.ts';
import {
  CANCEL_GRACE_MS,
  type LocalTask,
  LocalTaskBook,
  type TaskEventSink,
  TIMEOUT_GRACE_MS,
} from './local-tasks.ts';
import { groupMembers, type ProcessRecord, ProcessRecords } from './process-records.ts';

const TASK_PREFIX = 'process/';
/** How long an orphaned group found after a restart has to die once killed. */
const ORPHAN_KILL_WAIT_MS = 10_000;
export const RESTARTED_REASON =
  'the server restarted while the job ran; its processes were stopped and its output is lost';

export class ProcessBackend implements ComputeBackend {
  readonly platform = 'process' as const;
  private readonly book: LocalTaskBook;
  private readonly children = new Map<string, ChildProcess>();
  private readonly terminating = new Set<string>();
  private readonly records: ProcessRecords;
  private readonly data: LocalJobData;

  constructor(
    objects: ObjectStore,
    emit: TaskEventSink,
    private readonly log: Logger,
    /** Each job's own directory is below it: its root, where it runs and its data is. */
    workRoot: string = path.join(os.tmpdir(), 'ferry-jobs'),
    /** Variables a job inherits before its own env (PATH, so programs are found). */
    private readonly baseEnv: Readonly<Record<string, string>> = {},
    /** Where running jobs are recorded, so a restarted server finds what was left running. */
    recordsDir: string = path.join(os.tmpdir(), 'ferry-processes'),
    /** Fetches inputs from their sources (by default: inline content and https only). */
    fetcher: InputFetcher = new InputSources(),
    /** Where outputs with a url may be delivered. */
    delivery?: DeliveryRoots,
  ) {
    this.records = new ProcessRecords(recordsDir);
    this.data = new LocalJobData(workRoot, 'root', fetcher, delivery);
    this.book = new LocalTaskBook(objects, emit, log, (task) =>
      this.terminate(task.taskId, TIMEOUT_GRACE_MS),
    );
  }

  async launch(execution: Execution, _constraints: ResolvedConstraints): Promise<{ taskId: string }> {
    const taskId = `${TASK_PREFIX}${execution.id}`;
    if (this.book.has(taskId)) return { taskId }; // a redelivered launch: the task exists
    const task = this.book.open(taskId, execution);
    // Its directory goes when it ends, as a container's file system does; outputs are kept.
    task.cleanup = () => this.data.remove(execution.id);
    if (!LocalJobData.needed(execution)) {
      await this.start(task, execution);
      return { taskId };
    }
    // Like RunTask: accepted now; the inputs are fetched, then the job starts (or fails to).
    task.collect = (sink, deliver) => this.data.collect(execution, sink, deliver);
    task.abortStaging = new AbortController();
    void this.data
      .stage(execution, task.abortStaging.signal)
      .then(
        async () => {
          task.abortStaging = undefined;
          if (task.stopReason !== undefined)
            this.book.failedToStart(task, `stopped before it ran: ${task.stopReason}`);
          else await this.start(task, execution);
        },
        (error: Error) => {
          task.abortStaging = undefined;
          this.book.failedToStart(
            task,
            task.stopReason === undefined ? error.message : `stopped before it ran: ${task.stopReason}`,
          );
        },
      )
      .catch((error) => {
        this.log.error('could not start the job', { taskId, error });
        this.book.failedToStart(task, `could not start the job: ${(error as Error).message}`);
      });
    return { taskId };
  }

  /** Spawns the job in its own directory (its root, where its inputs and outputs are). */
  private async start(task: LocalTask, execution: Execution): Promise<void> {
    await this.startStep(task, execution, 0);
  }

  /**
   * Spawns step `index` of the job (a job without steps has only step 0). When it ends, the
   * next step starts, or the task ends.
   */
  private async startStep(task: LocalTask, execution: Execution, index: number): Promise<void> {
    const { taskId } = task;
    const multiStep = execution.spec.steps !== undefined;
    const step = stepsOf(execution.spec)[index];
    if (step === undefined) throw new Error(`the job has no step ${index + 1}`);
    const root = this.data.dirOf(execution.id);
    // The job's workdir is below its root, as its data paths are.
    const cwd = path.join(root, step.workdir ?? '');
    await fsp.mkdir(cwd, { recursive: true });
    const [program = '', ...args] = step.command;
    const from = { stdout: task.stdout.totalBytes, stderr: task.stderr.totalBytes };
    let stepStartedAt: string | null = null;
    const stepEnded = async (end: {
      exitCode: number | null;
      signal: string | null;
      endedAt: string;
      startError?: string;
    }) => {
      const steps = stepsOf(execution.spec);
      const result: StepResult = {
        exitCode: end.exitCode,
        signal: end.signal,
        startedAt: stepStartedAt,
        endedAt: end.endedAt,
        stdoutFrom: from.stdout,
        stderrFrom: from.stderr,
        ...(end.startError === undefined ? {} : { startError: end.startError }),
      };
      task.steps = [...(task.steps ?? []), result];
      if (index + 1 < steps.length && task.stopReason === undefined && stepLetsNextRun(step, result)) {
        try {
          await this.startStep(task, execution, index + 1);
          return;
        } catch (error) {
          // The next step could not even be tried (its workdir could not be made): it failed.
          task.steps = [
            ...task.steps,
            {
              exitCode: null,
              signal: null,
              startedAt: null,
              endedAt: new Date().toISOString(),
              stdoutFrom: task.stdout.totalBytes,
              stderrFrom: task.stderr.totalBytes,
              startError: `could not start step ${index + 2}: ${(error as Error).message}`,
            },
          ];
        }
      }
      const job = jobExitOf(steps, task.steps, task.stopReason !== undefined);
      await this.book.finish(task, { ...job, endedAt: end.endedAt });
    };
    const child = spawn(program, args, {
      cwd,
      env: { ...this.baseEnv, ...step.env, FERRY_ROOT: root },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so stop reaches everything the job started.
      detached: true,
    });
    this.children.set(taskId, child);
    const outputs = Promise.all([
      captureStream(child.stdout, task.stdout),
      captureStream(child.stderr, task.stderr),
    ]);
    child.once('spawn', () => {
      const pid = child.pid ?? 0;
      try {
        this.records.write(execution.id, taskId, pid);
      } catch (error) {
        // Unrecorded, the job could outlive a crash unseen: it does not run.
        this.log.error('could not record the job process', { taskId, error });
        signalGroup(-pid, 'SIGKILL');
        this.book.failedToStart(task, `could not record the job process: ${(error as Error).message}`);
        return;
      }
      stepStartedAt = new Date().toISOString();
      if (index === 0) this.book.markRunning(task, stepStartedAt);
      // A stop that came while this step was being started reaches it now.
      else if (task.stopReason !== undefined)
        this.terminate(taskId, task.timedOut ? TIMEOUT_GRACE_MS : CANCEL_GRACE_MS);
    });
    // The job ends with its first process; what it left in its group goes with it. Its end is
    // then, not when its output pipes close ('close') or its result is stored.
    let endedAt: string | undefined;
    child.once('exit', () => {
      endedAt = new Date().toISOString();
      if (child.pid !== undefined) signalGroup(-child.pid, 'SIGKILL');
    });
    child.once('error', (error: NodeJS.ErrnoException) => {
      if (child.pid !== undefined) return; // it ran: 'close' reports its end
      this.children.delete(taskId);
      const reason =
        error.code === 'ENOENT'
          ? `program not found: ${program}`
          : `could not start ${program}: ${error.message}`;
      if (index === 0 || task.status !== 'RUNNING') {
        this.book.failedToStart(task, reason);
        return;
      }
      // A later step that cannot start fails, as a shell says so: 127 when there is no such program.
      task.stderr.write(Buffer.from(`ferry: ${reason}\n`));
      void stepEnded({
        exitCode: error.code === 'ENOENT' ? 127 : 126,
        signal: null,
        endedAt: new Date().toISOString(),
        startError: reason,
      }).catch((failure) => this.log.error('could not go on with the job', { taskId, error: failure }));
    });
    child.once('close', (code, signal) => {
      // A child that never started may close after the next step's began: that one is not its.
      if (this.children.get(taskId) !== child) return;
      this.children.delete(taskId);
      this.terminating.delete(taskId);
      this.records.remove(execution.id);
      if (task.status !== 'RUNNING' || stepStartedAt === null) return; // never started; reported by 'error' or 'spawn'
      const end = {
        exitCode: code ?? 128 + (os.constants.signals[signal as NodeJS.Signals] ?? 0),
        signal,
        endedAt: endedAt ?? new Date().toISOString(),
      };
      void outputs
        .catch((error) => this.log.warn('output capture ended with an error', { taskId, error }))
        .then(() => (multiStep ? stepEnded(end) : this.book.finish(task, end)))
        .catch((error) => this.log.error('could not go on with the job', { taskId, error }));
    });
  }

  async stop(taskId: string, reason: string): Promise<void> {
    const task = this.book.get(taskId);
    if (task === undefined || task.status === 'STOPPED') return;
    task.stopReason ??= reason;
    task.abortStaging?.abort();
    this.terminate(taskId, task.timedOut ? TIMEOUT_GRACE_MS : CANCEL_GRACE_MS);
  }

  /** SIGTERM to the job's process group, then SIGKILL to what is left of it after `graceMs`. */
  private terminate(taskId: string, graceMs: number): void {
    const child = this.children.get(taskId);
    if (child?.pid === undefined || this.terminating.has(taskId)) return;
    this.terminating.add(taskId);
    const group = -child.pid;
    signalGroup(group, 'SIGTERM');
    setTimeout(() => {
      if (this.children.has(taskId)) signalGroup(group, 'SIGKILL');
    }, graceMs).unref();
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

  /**
   * After a restart: kills every job group an earlier server left running (a plain process
   * cannot be adopted again), waits until they are gone, then reports the executions that were
   * running FAILED, saying why.
   */
  /**
   * Whether a launch cut short by a crash may have started the job: its work directory is made
   * just before the spawn. Unknowable for a job with its own workdir, which is taken as not.
   */
  mayHaveStarted(execution: Execution): boolean {
    return fs.existsSync(this.data.dirOf(execution.id));
  }

  async recover(activeExecutions: ReadonlyMap<string, Execution>): Promise<{ killed: number; lost: number }> {
    const { records, unreadable } = await this.records.readAll();
    let killed = 0;
    for (const record of records) {
      if (await this.killOrphan(record)) killed++;
      this.records.remove(record.executionId);
    }
    for (const file of unreadable) {
      this.log.warn('ignoring an unreadable process record', { file });
      await fsp.rm(file, { force: true });
    }
    await this.data.removeAllBut(new Set(activeExecutions.keys()));
    let lost = 0;
    for (const execution of activeExecutions.values()) {
      const taskId = execution.task?.id;
      if (taskId === undefined || !taskId.startsWith(TASK_PREFIX) || this.book.has(taskId)) continue;
      this.book.lost(this.book.open(taskId, execution, true), RESTARTED_REASON);
      lost++;
    }
    return { killed, lost };
  }

  /** SIGKILLs what is left of a recorded job's group and waits until it is gone; true if any was left. */
  private async killOrphan(record: ProcessRecord): Promise<boolean> {
    if (record.startTime === null) {
      this.log.warn('cannot tell whether a job process is still running (no /proc); left alone', {
        executionId: record.executionId,
        pid: record.pid,
      });
      return false;
    }
    if (groupMembers(record).length === 0) return false;
    const deadline = Date.now() + ORPHAN_KILL_WAIT_MS;
    signalGroup(-record.pid, 'SIGKILL');
    while (groupMembers(record).length > 0) {
      if (Date.now() > deadline) {
        this.log.error('processes of a stopped job are still there', {
          executionId: record.executionId,
          pids: groupMembers(record),
        });
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    this.log.warn('stopped the processes of a job left running by an earlier server', {
      executionId: record.executionId,
      processGroup: record.pid,
    });
    return true;
  }
}

function signalGroup(group: number, signal: NodeJS.Signals): void {
  try {
    process.kill(group, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}
