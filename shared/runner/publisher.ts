// The publisher: the container beside a Fargate job that captures its stdout and stderr
// (read from the FIFOs the wrapper writes, step after step) under the job's output limits, refreshes a live
// window of each stream in S3 while the job runs, and stores the result — streams, then the
// job's outputs from the data volumes, result.json last — when the job ends or the task is stopped.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { encodeLive, liveKey, storeResult } from '../capture/result-writer.ts';
import { captureLimitsFor, captureStream, StreamCapture } from '../capture/stream-capture.ts';
import type { ResultManifest, StepResult } from '../domain/execution.ts';
import type { PublisherOutput } from '../domain/fargate-task.ts';
import type { OutputLimits } from '../domain/job-spec.ts';
import { jobExitOf, stepLetsNextRun } from '../domain/steps.ts';
import type { Logger } from '../logger.ts';
import type { ResultSink } from '../ports.ts';
import { collectOutputs } from '../staging/outputs.ts';

export interface PublisherOptions {
  readonly executionId: string;
  /**
   * Holds the `stdout` and `stderr` FIFOs and, at the end, the wrapper's `exit.json`: the
   * first step's; step K's are in `step-K` under it.
   */
  readonly ioDir: string;
  /** A job with steps: whether each one's failure is ignored, in order. Absent for a plain job. */
  readonly steps?: readonly { readonly ignoreError: boolean }[];
  readonly limits: OutputLimits;
  /** The job's outputs, collected once it has ended: each in volume K under `dataRoot`. */
  readonly outputs?: { readonly list: readonly PublisherOutput[]; readonly dataRoot: string };
  /** Where the result goes: S3 itself, or upload links Ferry signs for this execution only. */
  readonly objects: ResultSink;
  readonly log: Logger;
  /** How often the live window is refreshed while output keeps coming. */
  readonly flushSeconds: number;
  /** After a stop request, how long to keep draining before storing what there is. */
  readonly stopGraceSeconds: number;
  /** Resolves when the task is asked to stop (SIGTERM from ECS). */
  readonly stopped: Promise<void>;
}

interface WrapperExit {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  /** The wrapper passed a stop (StopTask's SIGTERM) on to the job. */
  readonly stopped?: boolean;
  readonly startError: string | null;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** How long after a stop a later step's wrapper may still take to open its FIFOs. */
const NOT_STARTED_AFTER_STOP_MS = 2000;

async function readExit(ioDir: string, waitMs: number): Promise<WrapperExit | undefined> {
  const file = path.join(ioDir, 'exit.json');
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return JSON.parse(await fsp.readFile(file, 'utf8')) as WrapperExit;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || Date.now() >= deadline) return undefined;
      await sleep(100);
    }
  }
}

/** Resolves true once exit.json exists, or false once `done()` says it no longer matters. */
async function waitForExit(ioDir: string, done: () => boolean): Promise<boolean> {
  const file = path.join(ioDir, 'exit.json');
  while (!done()) {
    if (fs.existsSync(file)) return true;
    await sleep(200);
  }
  return false;
}

/**
 * Opening a FIFO for reading waits for its writer. If the job never opens it (it never
 * started), a stop must not leave the publisher waiting: opening the write end ourselves
 * lets the read end open and see end-of-file at once.
 */
function unblock(fifo: string): void {
  try {
    fs.closeSync(fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
  } catch {
    // No reader waiting (ENXIO) or already gone: nothing to unblock.
  }
}

/**
 * Opens a FIFO for reading as a socket: libuv then reads it without blocking, several
 * times faster than file reads on the thread pool. The open itself waits for the writer.
 */
async function openFifo(fifo: string): Promise<Readable> {
  // A raw descriptor (not a FileHandle, which would close it when collected): the socket owns it.
  const fd = await new Promise<number>((resolve, reject) =>
    fs.open(fifo, fs.constants.O_RDONLY, (error, opened) => (error ? reject(error) : resolve(opened))),
  );
  return new net.Socket({ fd, readable: true, writable: false });
}

/** How one step's FIFOs were drained: to their end, or cut off after a stop's grace period. */
type Drain = 'drained' | 'grace-over';

/**
 * Captures one step's stdout and stderr into the job's captures until both reach their end
 * (the wrapper writes exit.json and closes them), or until `stop` says the grace is over.
 * Resolves with how it ended and when the step's wrapper opened its stdout (null if never).
 */
async function captureStep(
  ioDir: string,
  captures: Record<'stdout' | 'stderr', StreamCapture>,
  stop: Promise<'grace-over'>,
  /** For a later step: resolves when a stop is asked for, which it may never start after. */
  stopAsked?: Promise<void>,
): Promise<{ outcome: Drain; startedAt: string | null }> {
  let startedAt: string | null = null;
  const streams = (['stdout', 'stderr'] as const).map((name) => {
    const fifo = path.join(ioDir, name);
    let open = false;
    const opened = openFifo(fifo).then((readable) => {
      open = true;
      if (name === 'stdout') startedAt = new Date().toISOString();
      return readable;
    });
    const done = opened.then((readable) => captureStream(readable, captures[name]));
    return { name, fifo, opened, done, isOpen: () => open };
  });
  let finished = false;
  const drained = Promise.all(streams.map((s) => s.done)).then(() => {
    finished = true;
    return 'drained' as const;
  });
  // The wrapper writes exit.json once the step has ended, or when a stop came before it
  // started and it never opened the FIFOs (the stage container writes it too when the inputs
  // could not be had). Either way no writer is coming: unblocking them lets the capture end
  // without waiting for a stop signal, which may never reach the publisher (PID 1 ignores a
  // SIGTERM that arrives before its handler is installed).
  void waitForExit(ioDir, () => finished).then(async (ended) => {
    if (!ended) return;
    // Unblocking works only once our own open is waiting in the kernel, which may not be
    // yet: keep at it until both ends are open.
    while (!finished && streams.some((stream) => !stream.isOpen())) {
      for (const stream of streams) if (!stream.isOpen()) unblock(stream.fifo);
      await sleep(50);
    }
  });
  // A later step's container is not started once the task is stopping: if its wrapper has not
  // opened the FIFOs shortly after the stop, it never will, and there is nothing to wait for.
  const neverStarted =
    stopAsked === undefined
      ? new Promise<never>(() => undefined)
      : stopAsked.then(async () => {
          await sleep(NOT_STARTED_AFTER_STOP_MS);
          return streams.some((stream) => stream.isOpen()) ? stop : ('grace-over' as const);
        });
  const outcome = await Promise.race([drained, stop, neverStarted]);
  if (outcome === 'grace-over') {
    for (const stream of streams) {
      unblock(stream.fifo);
      void stream.opened.then((readable) => readable.destroy());
    }
  }
  return { outcome, startedAt };
}

export async function publish(options: PublisherOptions): Promise<ResultManifest> {
  const { executionId, ioDir, limits, objects, log } = options;
  const startedAt = new Date().toISOString();
  const captures = {
    stdout: new StreamCapture(captureLimitsFor(limits, 'stdout')),
    stderr: new StreamCapture(captureLimitsFor(limits, 'stderr')),
  };

  let flushed = { stdout: -1, stderr: -1 };
  let flushing = Promise.resolve();
  const flush = () => {
    flushing = flushing
      .then(async () => {
        for (const name of ['stdout', 'stderr'] as const) {
          const total = captures[name].totalBytes;
          if (total === flushed[name]) continue;
          await objects.put(
            liveKey(executionId, name),
            encodeLive(captures[name]),
            'application/octet-stream',
          );
          flushed = { ...flushed, [name]: total };
        }
      })
      .catch((error) => log.warn('could not refresh the live output', { executionId, error }));
  };
  const timer = setInterval(flush, options.flushSeconds * 1000);

  let stopRequested = false;
  const stop = options.stopped.then(async () => {
    stopRequested = true;
    log.info('stop requested; draining output', { executionId, graceSeconds: options.stopGraceSeconds });
    await sleep(options.stopGraceSeconds * 1000);
    return 'grace-over' as const;
  });

  // Each step in turn, its output continuing the job's streams; the next one runs only when
  // this one let it (as its container's dependency in the task definition says too).
  const steps = options.steps ?? [{ ignoreError: false }];
  const results: StepResult[] = [];
  let outcome: Drain = 'drained';
  let exit: WrapperExit | undefined;
  let timedOut = false;
  let stoppedJob = false;
  let startError: string | undefined;
  for (const [index, step] of steps.entries()) {
    const stepDir = index === 0 ? ioDir : path.join(ioDir, `step-${index + 1}`);
    const from = { stdout: captures.stdout.totalBytes, stderr: captures.stderr.totalBytes };
    const captured = await captureStep(stepDir, captures, stop, index > 0 ? options.stopped : undefined);
    outcome = captured.outcome;
    exit = await readExit(stepDir, outcome === 'drained' ? 5000 : 0);
    timedOut ||= exit?.timedOut === true;
    stoppedJob ||= exit?.stopped === true;
    if (index === 0 && exit?.startError) startError = exit.startError;
    // A later step that never started (the task stopped first, or the job's time ran out before
    // it) has no result, as on every backend.
    if (index > 0 && captured.startedAt === null && exit === undefined) break;
    if (index > 0 && exit?.timedOut && exit.exitCode === null && exit.signal === null) break;
    results.push({
      exitCode: exit?.exitCode ?? null,
      signal: exit?.signal ?? null,
      startedAt: captured.startedAt,
      endedAt: new Date().toISOString(),
      stdoutFrom: from.stdout,
      stderrFrom: from.stderr,
      ...(exit?.startError ? { startError: exit.startError } : {}),
    });
    const ran = exit !== undefined && (exit.exitCode !== null || exit.signal !== null);
    if (
      outcome === 'grace-over' ||
      stopRequested ||
      !ran ||
      exit?.timedOut ||
      exit?.stopped ||
      startError !== undefined ||
      (exit !== undefined && !stepLetsNextRun(step, exit))
    ) {
      break;
    }
  }
  clearInterval(timer);
  await flushing;

  if (startError !== undefined) log.warn('the job did not start', { executionId, reason: startError });
  const wanted = options.outputs?.list ?? [];
  const outputs =
    wanted.length === 0 || startError !== undefined
      ? []
      : await collectOutputs(
          executionId,
          wanted,
          async (output) => {
            const volume = path.join(options.outputs?.dataRoot ?? '', String(output.volume));
            return output.relative === '' ? volume : path.join(volume, output.relative);
          },
          objects,
          limits,
        );
  const cutShort = stopRequested || outcome === 'grace-over' || exit === undefined || timedOut || stoppedJob;
  const ending =
    options.steps === undefined
      ? { exitCode: exit?.exitCode ?? null, signal: exit?.signal ?? null }
      : jobExitOf(steps, results, cutShort);
  const manifest = await storeResult(objects, executionId, captures, limits.keep, {
    ...ending,
    partial: cutShort,
    startedAt,
    endedAt: new Date().toISOString(),
    ...(timedOut ? { timedOut: true } : {}),
    ...(startError === undefined ? {} : { startError }),
    outputs,
    ...(options.steps === undefined ? {} : { steps: results }),
  });
  await Promise.all(
    (['stdout', 'stderr'] as const).map((name) =>
      objects.delete(liveKey(executionId, name)).catch(() => undefined),
    ),
  );
  return manifest;
}
