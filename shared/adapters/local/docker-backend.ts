// ComputeBackend on a Docker Engine. Each job is one container, named and labelled after
// its execution, with the bid's CPU and memory applied and no network unless asked.
// Output is captured by ferry-wrapper, the same static program that wraps a job on Fargate: it is
// bind-mounted into the container as its entry point, runs the job's argv, and keeps the head and
// tail of stdout and stderr (and their totals) in spool files of a per-execution directory under
// the data directory. Nothing outside the container sits in the job's output path, so output never
// slows the job, and a server restarted mid-run finds all of it there. Containers outlive a
// server restart, and `recover` adopts them again. Where no wrapper can be built, the server
// attaches to the container instead (optionally with the engine's local log driver as a journal
// to replay after a restart, which slows jobs printing many short lines).
// Every container also carries the identity of the server that made it: several servers
// may share one engine, and each adopts, describes and removes only its own.
// Stopping escalates without waiting on the engine: SIGTERM, SIGKILL after a grace, then a
// forced removal; if the engine still has not confirmed the end, the task is reported ended
// anyway, with its resources held (DEPROVISIONING) until the container is really gone.
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import { z } from 'zod';
import { openPlainFile, SpoolFile, spoolKeepArgument } from '../../capture/spool.ts';
import { captureLimitsFor } from '../../capture/stream-capture.ts';
import type { Execution, ResolvedConstraints, StepResult } from '../../domain/execution.ts';
import { imagesOf, type JobStep, stepsOf } from '../../domain/job-spec.ts';
import { jobExitOf, stepLetsNextRun } from '../../domain/steps.ts';
import type { Logger } from '../../logger.ts';
import type { ComputeBackend, LiveRead, ObjectStore, TaskStatus } from '../../ports.ts';
import { LocalJobData } from './job-data.ts';
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
/** How a container's output is captured: `spool` for ferry-wrapper's spool files; absent for attach. */
export const LABEL_CAPTURE = 'ferry.capture';
/** Which step of its job a container runs (0 for a job without steps). */
export const LABEL_STEP = 'ferry.step';
const OOM_REASON = 'OutOfMemoryError: Container killed due to memory usage';
/** Where the wrapper and the spool directory are mounted in a job's container, as on Fargate. */
const WRAPPER_IN_CONTAINER = '/ferry/bin/ferry-wrapper';
const SPOOL_IN_CONTAINER = '/ferry/io';
/** The most of exit.json read: the wrapper's record is far smaller. */
const EXIT_RECORD_BYTES = 8 * 1024;
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

/** The container of a step: the job's own name for its first, and a numbered one after. */
export const stepContainerName = (executionId: string, index: number): string =>
  index === 0 ? containerName(executionId) : `${containerName(executionId)}-step${index + 1}`;

/**
 * The processes and threads a job may hold at once: 512 per vCPU, at least 1,024. Plenty for a
 * parallel build or a JVM, and small enough that a fork bomb that fills it still dies within a
 * second of its stop on the CPU it was given (at 4,096 on one vCPU it could take a minute).
 */
export const pidsLimit = (cpu: number): number => Math.max(1024, Math.ceil(cpu * 512));

/**
 * How the Docker backend captures output. `wrapper`: ferry-wrapper keeps it in spool files (the
 * default). `journal`: the server attaches, and the engine's `local` log driver keeps a journal
 * to replay after a restart. `attach`: the server attaches, nothing is kept for a restart.
 * `spoolRoot` holds each execution's spool directory, whatever the mode: a server started in
 * another mode still adopts the containers an earlier one started with the wrapper.
 */
export type DockerCapture =
  | { readonly kind: 'wrapper'; readonly wrapperPath: string; readonly spoolRoot: string }
  | { readonly kind: 'journal' | 'attach'; readonly spoolRoot: string };

/** What the wrapper wrote to exit.json when the job ended. */
interface WrapperExit {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly startError: string | null;
}

/** Output being read from an attached container, or none when the wrapper keeps it. */
interface Attached {
  readonly output: Readable;
  readonly captured: Promise<void>;
}

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

/** The step a task is running, and what the next one needs. */
interface StepRun {
  readonly execution: Execution;
  readonly constraints: ResolvedConstraints;
  readonly index: number;
  /** Where the step's output starts in the job's streams. */
  readonly from: { readonly stdout: number; readonly stderr: number };
  startedAt: string | null;
}

/** What a job with steps has done so far, kept beside its spool for a server that restarts. */
const StepsRecordSchema = z.object({
  steps: z.array(
    z.object({
      exitCode: z.number().int().nullable(),
      signal: z.string().nullable(),
      startedAt: z.string().nullable(),
      endedAt: z.string(),
      stdoutFrom: z.number().int().nonnegative(),
      stderrFrom: z.number().int().nonnegative(),
      startError: z.string().optional(),
    }),
  ),
  current: z.object({
    index: z.number().int().nonnegative(),
    from: z.object({ stdout: z.number().int().nonnegative(), stderr: z.number().int().nonnegative() }),
  }),
});

type StepsRecord = z.infer<typeof StepsRecordSchema>;

/** Bytes the job has written to each stream so far. */
async function streamTotals(task: LocalTask): Promise<StepRun['from']> {
  if (task.spool !== undefined) {
    const [stdout, stderr] = await Promise.all([
      task.spool.stdout.totalBytes(),
      task.spool.stderr.totalBytes(),
    ]);
    return { stdout, stderr };
  }
  return { stdout: task.stdout.totalBytes, stderr: task.stderr.totalBytes };
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
  /** Each task's step now running (or about to), by task id. */
  private readonly steps = new Map<string, StepRun>();

  constructor(
    private readonly docker: Docker,
    /** This server's identity (kept in its data directory); its containers carry it. */
    private readonly serverId: string,
    objects: ObjectStore,
    emit: TaskEventSink,
    private readonly log: Logger,
    private readonly capture: DockerCapture,
    /**
     * Whether an image missing from the host may be pulled (its registry is allowed). The bid
     * already checked, but an image present then may have been removed before the launch.
     */
    private readonly mayPull: (image: string) => string | undefined = () => undefined,
    /** Where jobs' inputs are staged and outputs written; without it, jobs with data fail to start. */
    private readonly data?: LocalJobData,
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
      this.steps.delete(taskId);
      this.log.error('container run failed', { taskId, error });
      this.book.failedToStart(task, `could not run the container: ${messageOf(error)}`);
    });
    return { taskId };
  }

  private async run(task: LocalTask, execution: Execution, constraints: ResolvedConstraints): Promise<void> {
    const name = containerName(execution.id);
    for (const image of imagesOf(execution.spec)) {
      const pulled = await this.ensureImage(image);
      if (pulled !== undefined) {
        this.book.failedToStart(task, pulled);
        return;
      }
    }
    if (LocalJobData.needed(execution)) {
      // A container of an earlier attempt at this launch runs on the inputs it was given.
      const earlier = await this.docker
        .getContainer(name)
        .inspect()
        .catch(() => undefined);
      if (earlier !== undefined) {
        await this.adopt(task, this.docker.getContainer(name), execution);
        return;
      }
      if (!(await this.stageData(task, execution))) return;
    }
    if (this.capture.kind === 'wrapper') await this.prepareSpool(execution.id);
    await this.startStep(task, execution, constraints, 0);
  }

  /**
   * Creates and starts the container of step `index` (a job without steps has only step 0),
   * then waits for its end; `awaitEnd` starts the step after it, or ends the task.
   */
  private async startStep(
    task: LocalTask,
    execution: Execution,
    constraints: ResolvedConstraints,
    index: number,
  ): Promise<void> {
    const step = stepsOf(execution.spec)[index];
    if (step === undefined) throw new Error(`the job has no step ${index + 1}`);
    const name = stepContainerName(execution.id, index);
    const spooled = this.capture.kind === 'wrapper';
    if (spooled) task.spool ??= this.spoolFiles(execution);
    // The first step starts the streams afresh (a spool may hold an earlier attempt's output).
    const from = index === 0 ? { stdout: 0, stderr: 0 } : await streamTotals(task);
    const run: StepRun = { execution, constraints, index, from, startedAt: null };
    this.steps.set(task.taskId, run);
    if (execution.spec.steps !== undefined) await this.saveSteps(task, run);
    if (await this.stoppedBetweenSteps(task, run)) return;
    let container: Docker.Container;
    try {
      container = await this.docker.createContainer({
        name,
        Image: step.image,
        ...this.entryPoint(execution, step, index),
        Env: Object.entries(step.env).map(([key, value]) => `${key}=${value}`),
        ...(step.workdir === undefined ? {} : { WorkingDir: step.workdir }),
        Labels: {
          [LABEL_EXECUTION]: execution.id,
          [LABEL_SERVER]: this.serverId,
          [LABEL_STEP]: String(index),
          'ferry.task': task.taskId,
          ...(spooled ? { [LABEL_CAPTURE]: 'spool' } : {}),
        },
        AttachStdout: !spooled,
        AttachStderr: !spooled,
        Tty: false,
        OpenStdin: false,
        HostConfig: {
          NanoCpus: Math.round(constraints.cpu * 1e9),
          Memory: constraints.memoryMiB * MiB,
          MemorySwap: constraints.memoryMiB * MiB,
          NetworkMode: execution.spec.network === 'egress' ? 'bridge' : 'none',
          PidsLimit: pidsLimit(constraints.cpu),
          Binds: [
            ...(this.capture.kind === 'wrapper'
              ? [
                  `${this.capture.wrapperPath}:${WRAPPER_IN_CONTAINER}:ro`,
                  `${this.spoolDir(execution.id)}:${SPOOL_IN_CONTAINER}`,
                ]
              : []),
            ...(this.data !== undefined && LocalJobData.needed(execution) ? this.data.binds(execution) : []),
          ],
          // With the wrapper, or when only attaching, the engine keeps no log; the journal is a
          // bounded copy of the output, replayed only if the server restarts mid-run.
          LogConfig:
            this.capture.kind === 'journal'
              ? { Type: 'local', Config: { 'max-size': '64m', 'max-file': '2' } }
              : { Type: 'none', Config: {} },
        },
      });
    } catch (error) {
      if (statusOf(error) === 409) {
        // A container from an earlier attempt at this launch: carry on with it.
        await this.adopt(task, this.docker.getContainer(name), execution);
        return;
      }
      await this.stepCouldNotStart(task, run, `could not create the container: ${messageOf(error)}`);
      return;
    }
    let attached: Attached | undefined;
    if (spooled) {
      // A new container: an exit record left by an earlier one is not its own.
      await fsp.rm(path.join(this.spoolDir(execution.id), 'exit.json'), { force: true });
    } else {
      const output = (await container.attach({
        stream: true,
        stdout: true,
        stderr: true,
      })) as unknown as Readable;
      attached = { output, captured: demux(output, task) };
    }
    if (index > 0 && task.stopReason !== undefined) {
      // A stop came while the container was made: it never runs.
      attached?.output.destroy();
      await container.remove({ force: true }).catch(() => undefined);
      await this.stoppedBetweenSteps(task, run);
      return;
    }
    try {
      await container.start();
    } catch (error) {
      await container.remove({ force: true }).catch(() => undefined);
      await this.stepCouldNotStart(task, run, `could not start the container: ${messageOf(error)}`);
      return;
    }
    run.startedAt = new Date().toISOString();
    this.watchFor(task.taskId);
    // The job's deadline counts from its first step (also when a restart came between steps).
    if (task.status !== 'RUNNING') this.book.markRunning(task, task.startedAt ?? run.startedAt);
    await this.awaitEnd(task, container, attached);
  }

  /** A stop (cancel, timeout) that came before a later step ran: the job ends with the steps it had. */
  private async stoppedBetweenSteps(task: LocalTask, run: StepRun): Promise<boolean> {
    if (run.index === 0 || task.stopReason === undefined) return false;
    const steps = stepsOf(run.execution.spec);
    await this.book.finish(task, { ...jobExitOf(steps, task.steps ?? [], true) });
    await this.removeSpool(task.executionId);
    this.forget(task.taskId);
    this.steps.delete(task.taskId);
    return true;
  }

  /**
   * A step whose container could not be made or started: the first means the task never
   * started; a later one is that step failing, which ends the job.
   */
  private async stepCouldNotStart(task: LocalTask, run: StepRun, reason: string): Promise<void> {
    if (run.index === 0) {
      this.steps.delete(task.taskId);
      await this.removeSpool(task.executionId);
      this.book.failedToStart(task, reason);
      return;
    }
    await this.stepEnded(task, run, {
      exitCode: null,
      signal: null,
      endedAt: new Date().toISOString(),
      startError: reason,
      removed: true,
    });
  }

  /**
   * Fetches the job's inputs and makes its output directories; false (the task reported as
   * failed to start, naming the input) when that cannot be done or a stop came meanwhile.
   */
  private async stageData(task: LocalTask, execution: Execution): Promise<boolean> {
    const data = this.data;
    if (data === undefined) {
      this.book.failedToStart(task, 'this server does not stage inputs or collect outputs');
      return false;
    }
    this.attachData(task, execution, data);
    task.abortStaging = new AbortController();
    try {
      await data.stage(execution, task.abortStaging.signal);
    } catch (error) {
      this.book.failedToStart(
        task,
        task.stopReason === undefined ? messageOf(error) : `stopped before it ran: ${task.stopReason}`,
      );
      return false;
    } finally {
      task.abortStaging = undefined;
    }
    if (task.stopReason !== undefined) {
      this.book.failedToStart(task, `stopped before it ran: ${task.stopReason}`);
      return false;
    }
    return true;
  }

  /** The task collects the job's outputs when it ends, and removes its data directory. */
  private attachData(task: LocalTask, execution: Execution, data: LocalJobData): void {
    task.collect = (sink, deliver) => data.collect(execution, sink, deliver);
    task.cleanup = () => data.remove(execution.id);
  }

  /**
   * The container's entry point and arguments for a step. The command is the whole argv: the
   * image's own entry point does not wrap it. With the wrapper, it is the wrapper's argv after
   * `--`; a later step's wrapper goes on with the output the steps before it left.
   */
  private entryPoint(
    execution: Execution,
    step: JobStep,
    index: number,
  ): { Entrypoint: string[]; Cmd: string[] } {
    const { outputLimits } = execution.spec;
    const { command } = step;
    if (this.capture.kind !== 'wrapper') return { Entrypoint: command.slice(0, 1), Cmd: command.slice(1) };
    return {
      Entrypoint: [WRAPPER_IN_CONTAINER],
      Cmd: [
        '--spool',
        SPOOL_IN_CONTAINER,
        '--stdout-keep',
        spoolKeepArgument(captureLimitsFor(outputLimits, 'stdout')),
        '--stderr-keep',
        spoolKeepArgument(captureLimitsFor(outputLimits, 'stderr')),
        ...(index > 0 ? ['--append'] : []),
        '--',
        ...command,
      ],
    };
  }

  private spoolDir(executionId: string): string {
    return path.join(this.capture.spoolRoot, executionId);
  }

  private spoolFiles(execution: Execution): { stdout: SpoolFile; stderr: SpoolFile } {
    const dir = this.spoolDir(execution.id);
    const limits = execution.spec.outputLimits;
    return {
      stdout: new SpoolFile(path.join(dir, 'stdout.spool'), captureLimitsFor(limits, 'stdout')),
      stderr: new SpoolFile(path.join(dir, 'stderr.spool'), captureLimitsFor(limits, 'stderr')),
    };
  }

  /**
   * The spool directory, which the job's user can write to whichever user the image runs as. Not
   * emptied: a container of an earlier attempt at this launch may be writing to it (the wrapper
   * starts its spool files afresh).
   */
  private async prepareSpool(executionId: string): Promise<void> {
    const dir = this.spoolDir(executionId);
    await fsp.mkdir(dir, { recursive: true });
    await fsp.chmod(dir, 0o777);
  }

  private async removeSpool(executionId: string): Promise<void> {
    await fsp.rm(this.spoolDir(executionId), { recursive: true, force: true }).catch((error) => {
      this.log.warn('could not remove the output spool', { executionId, error: messageOf(error) });
    });
    await fsp.rm(this.stepsFile(executionId), { force: true }).catch(() => undefined);
  }

  /**
   * Where a job with steps records how far it got: beside its spool directory, not in it, since
   * the job's containers can write there.
   */
  private stepsFile(executionId: string): string {
    return path.join(this.capture.spoolRoot, `${executionId}.steps.json`);
  }

  private async saveSteps(task: LocalTask, run: StepRun): Promise<void> {
    const record: StepsRecord = {
      steps: task.steps ?? [],
      current: { index: run.index, from: run.from },
    };
    const file = this.stepsFile(task.executionId);
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(`${file}.tmp`, JSON.stringify(record));
    await fsp.rename(`${file}.tmp`, file);
  }

  private async loadSteps(executionId: string): Promise<StepsRecord | undefined> {
    try {
      const parsed = StepsRecordSchema.safeParse(
        JSON.parse(await fsp.readFile(this.stepsFile(executionId), 'utf8')),
      );
      if (parsed.success) return parsed.data;
      this.log.warn('the record of a job’s steps is unreadable; going on without it', { executionId });
    } catch {
      // Not there: the server went down before the job's first step was recorded.
    }
    return undefined;
  }

  /**
   * What the wrapper recorded of the job's end; undefined when it did not get to (it was killed)
   * or the record is not one it wrote (the job can write in the spool directory too).
   */
  private async wrapperExit(executionId: string): Promise<WrapperExit | undefined> {
    const file = path.join(this.spoolDir(executionId), 'exit.json');
    try {
      const handle = await openPlainFile(file);
      if (handle === undefined) return undefined;
      let text: string;
      try {
        const { buffer, bytesRead } = await handle.read({ buffer: Buffer.alloc(EXIT_RECORD_BYTES) });
        text = buffer.toString('utf8', 0, bytesRead);
      } finally {
        await handle.close();
      }
      const record = JSON.parse(text) as Partial<WrapperExit>;
      const exitCode = record.exitCode;
      if (typeof exitCode !== 'number' || !Number.isInteger(exitCode) || exitCode < 0 || exitCode > 255) {
        return undefined;
      }
      return {
        exitCode,
        signal: typeof record.signal === 'string' ? record.signal.slice(0, 32) : null,
        startError: typeof record.startError === 'string' ? record.startError.slice(0, 4096) : null,
      };
    } catch (error) {
      this.log.warn('the exit record is unreadable; the engine says how the job ended', {
        executionId,
        error: messageOf(error),
      });
      return undefined;
    }
  }

  /** Takes over a container this server did not start (or started before a restart). */
  private async adopt(task: LocalTask, container: Docker.Container, execution: Execution): Promise<void> {
    const info = (await container.inspect()) as {
      State: DockerState;
      Config: { Labels: Record<string, string> };
    };
    const state = info.State;
    if (state.Status === 'created') {
      await container.remove({ force: true });
      await this.removeSpool(task.executionId);
      this.book.failedToStart(task, 'the container was created but never started; it was removed');
      return;
    }
    const spooled = info.Config.Labels[LABEL_CAPTURE] === 'spool';
    if (spooled) task.spool = this.spoolFiles(execution);
    if (this.data !== undefined && LocalJobData.needed(execution))
      this.attachData(task, execution, this.data);
    // A job with steps goes on from the step this container runs, with what the ones before did.
    let jobStartedAt = state.StartedAt;
    if (execution.spec.steps !== undefined) {
      const index = Number(info.Config.Labels[LABEL_STEP] ?? '0');
      const record = await this.loadSteps(execution.id);
      const here = record?.current.index === index ? record.current : undefined;
      // Step `index` runs, so each step before it without a record ended well, or was let fail.
      const steps = stepsOf(execution.spec);
      task.steps = Array.from(
        { length: index },
        (_, i): StepResult =>
          record?.steps[i] ?? {
            exitCode: steps[i]?.ignoreError === true ? null : 0,
            signal: null,
            startedAt: null,
            endedAt: state.StartedAt,
            stdoutFrom: 0,
            stderrFrom: 0,
          },
      );
      const constraints = execution.bid.constraints;
      if (constraints === undefined) throw new Error('its bid holds no resources to run the next step with');
      jobStartedAt = task.steps[0]?.startedAt ?? state.StartedAt;
      this.steps.set(task.taskId, {
        execution,
        constraints,
        index,
        from: here?.from ?? (await streamTotals(task)),
        startedAt: state.StartedAt,
      });
    }
    if (state.Running) {
      // The deadline counts from the job's start, as the engine recorded it.
      this.watchFor(task.taskId);
      this.book.markRunning(task, jobStartedAt);
      if (spooled) {
        await this.awaitEnd(task, container, undefined);
        return;
      }
      const output = (await container.attach({
        stream: true,
        logs: true,
        stdout: true,
        stderr: true,
      })) as unknown as Readable;
      await this.awaitEnd(task, container, { output, captured: demux(output, task) });
      return;
    }
    task.startedAt = jobStartedAt;
    if (spooled) {
      await this.awaitEnd(task, container, undefined);
      return;
    }
    const output = (await container.logs({
      follow: true,
      stdout: true,
      stderr: true,
    })) as unknown as Readable;
    await this.awaitEnd(task, container, { output, captured: demux(output, task) });
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
    attached: Attached | undefined,
  ): Promise<void> {
    const watch = this.watchFor(task.taskId);
    // A stop asked for before the container ran could not reach it: it applies now.
    if (task.stopReason !== undefined)
      void this.escalate(task.taskId, task.timedOut ? TIMEOUT_GRACE_MS : CANCEL_GRACE_MS);
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
    const run = this.steps.get(task.taskId);
    const multiStep = run?.execution.spec.steps !== undefined;
    if (ended === undefined) {
      // The engine has not confirmed the end: report what was captured, keep the capacity.
      attached?.output.destroy();
      this.log.warn('the engine did not confirm the container stopped; ending the task without it', {
        taskId: task.taskId,
      });
      if (multiStep && run !== undefined) {
        await this.stepEnded(task, run, { exitCode: null, signal: null, endedAt, removed: false }, container);
        return;
      }
      await this.book.finish(task, { exitCode: null, signal: null, endedAt, resourcesHeld: true });
      this.steps.delete(task.taskId);
      this.removeUntilGone(task, container);
      return;
    }
    await attached?.captured.catch((error) =>
      this.log.warn('output capture ended with an error', { taskId: task.taskId, error }),
    );
    const state = await answered(
      container.inspect().then((info) => (info as { State: DockerState }).State),
      ENGINE_ANSWER_MS,
    );
    const exit = task.spool === undefined ? undefined : await this.wrapperExit(task.executionId);
    const removed = await this.remove(task, container);
    // The wrapper says how the job itself ended; without it (killed, or no wrapper), the engine.
    const exitCode = exit?.exitCode ?? state?.ExitCode ?? ended.reply?.StatusCode ?? null;
    const signal =
      exit !== undefined
        ? exit.signal
        : exitCode !== null && exitCode > 128
          ? signalName(exitCode - 128)
          : null;
    const oom = state?.OOMKilled === true;
    if (exit?.startError && (run === undefined || run.index === 0)) {
      // The wrapper could not run the command (no such program, not executable): as when the
      // engine cannot start a container, the task never started.
      if (removed) this.forget(task.taskId);
      this.steps.delete(task.taskId);
      await this.removeSpool(task.executionId);
      this.book.failedToStart(task, exit.startError);
      if (!removed) this.removeUntilGone(task, container);
      return;
    }
    if (multiStep && run !== undefined) {
      await this.stepEnded(
        task,
        run,
        {
          exitCode,
          signal,
          endedAt,
          removed,
          oom,
          ...(exit?.startError ? { startError: exit.startError } : {}),
        },
        container,
      );
      return;
    }
    await this.book.finish(task, {
      exitCode,
      signal,
      endedAt,
      ...(oom ? { containerReason: OOM_REASON } : {}),
      ...(removed ? {} : { resourcesHeld: true }),
    });
    if (task.spool !== undefined) await this.removeSpool(task.executionId);
    this.steps.delete(task.taskId);
    if (!removed) this.removeUntilGone(task, container);
    else this.forget(task.taskId);
  }

  /**
   * A step of a job with several has ended: records how, then starts the next step, or ends
   * the task when this one failed (and does not ignore it), a stop came, or it was the last.
   */
  private async stepEnded(
    task: LocalTask,
    run: StepRun,
    end: {
      exitCode: number | null;
      signal: string | null;
      endedAt: string;
      /** False when the engine has not confirmed the container gone: nothing more runs. */
      removed: boolean;
      oom?: boolean;
      startError?: string;
    },
    container?: Docker.Container,
  ): Promise<void> {
    const steps = stepsOf(run.execution.spec);
    const result: StepResult = {
      exitCode: end.exitCode,
      signal: end.signal,
      startedAt: run.startedAt,
      endedAt: end.endedAt,
      stdoutFrom: run.from.stdout,
      stderrFrom: run.from.stderr,
      ...(end.startError === undefined ? {} : { startError: end.startError }),
    };
    task.steps = [...(task.steps ?? []), result];
    const step = steps[run.index];
    const next = run.index + 1;
    const goesOn =
      step !== undefined &&
      next < steps.length &&
      task.stopReason === undefined &&
      stepLetsNextRun(step, result);
    if (goesOn && end.removed) {
      this.forget(task.taskId);
      try {
        await this.startStep(task, run.execution, run.constraints, next);
      } catch (error) {
        // The next step could not even be tried: the job ends there, with what it has.
        this.log.error('could not start the next step', { taskId: task.taskId, error });
        await this.stepEnded(
          task,
          { ...run, index: next, startedAt: null },
          {
            exitCode: null,
            signal: null,
            endedAt: new Date().toISOString(),
            removed: true,
            startError: `could not start step ${next + 1}: ${messageOf(error)}`,
          },
        );
      }
      return;
    }
    // A step whose container the engine has not confirmed gone holds what the next would need.
    const cut = goesOn && !end.removed;
    const job = cut
      ? { exitCode: null, signal: null }
      : jobExitOf(steps, task.steps, task.stopReason !== undefined);
    await this.book.finish(task, {
      ...job,
      endedAt: end.endedAt,
      ...(end.oom === true ? { containerReason: OOM_REASON } : {}),
      ...(cut
        ? {
            stoppedReason: `the engine did not confirm step ${run.index + 1}'s container gone; the steps after it did not run`,
          }
        : {}),
      ...(end.removed ? {} : { resourcesHeld: true }),
    });
    await this.removeSpool(task.executionId);
    if (end.removed || container === undefined) this.forget(task.taskId);
    else this.removeUntilGone(task, container);
    this.steps.delete(task.taskId);
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
    const executionId = taskId.slice(TASK_PREFIX.length);
    const container = this.docker.getContainer(
      stepContainerName(executionId, this.steps.get(taskId)?.index ?? 0),
    );
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
      task.abortStaging?.abort();
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
      void this.adopt(task, container, execution).catch((error) => {
        this.log.error('could not adopt container', { taskId, error });
        // Nobody would watch it: it goes.
        void container.remove({ force: true }).catch(() => undefined);
        this.book.failedToStart(task, `lost after a restart: ${messageOf(error)}`);
      });
    }
    await this.removeStaleSpools(activeExecutions);
    await this.data?.removeAllBut(new Set(activeExecutions.keys()));
    return { adopted, removed };
  }

  /** Spool directories of executions that are no longer active: left by a crash between two steps. */
  private async removeStaleSpools(activeExecutions: ReadonlyMap<string, Execution>): Promise<void> {
    let entries: string[];
    try {
      entries = await fsp.readdir(this.capture.spoolRoot);
    } catch {
      return;
    }
    for (const entry of entries) {
      const executionId = entry.endsWith('.steps.json') ? entry.slice(0, -'.steps.json'.length) : entry;
      if (!activeExecutions.has(executionId)) await this.removeSpool(executionId);
    }
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
