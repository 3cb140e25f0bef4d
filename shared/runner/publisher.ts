// The publisher: the container beside a Fargate job that captures its stdout and stderr
// (read from the FIFOs the wrapper writes) under the job's output limits, refreshes a live
// window of each stream in S3 while the job runs, and stores the result — streams, then the
// job's outputs from the data volumes, result.json last — when the job ends or the task is stopped.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { encodeLive, liveKey, storeResult } from '../capture/result-writer.ts';
import { captureLimitsFor, captureStream, StreamCapture } from '../capture/stream-capture.ts';
import type { ResultManifest } from '../domain/execution.ts';
import type { PublisherOutput } from '../domain/fargate-task.ts';
import type { OutputLimits } from '../domain/job-spec.ts';
import type { Logger } from '../logger.ts';
import type { ResultSink } from '../ports.ts';
import { collectOutputs } from '../staging/outputs.ts';

export interface PublisherOptions {
  readonly executionId: string;
  /** Holds the `stdout` and `stderr` FIFOs and, at the end, the wrapper's `exit.json`. */
  readonly ioDir: string;
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

export async function publish(options: PublisherOptions): Promise<ResultManifest> {
  const { executionId, ioDir, limits, objects, log } = options;
  const startedAt = new Date().toISOString();
  const captures = {
    stdout: new StreamCapture(captureLimitsFor(limits, 'stdout')),
    stderr: new StreamCapture(captureLimitsFor(limits, 'stderr')),
  };
  const streams = (['stdout', 'stderr'] as const).map((name) => {
    const fifo = path.join(ioDir, name);
    let open = false;
    const opened = openFifo(fifo).then((readable) => {
      open = true;
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
  // The wrapper writes exit.json once the job has ended, or when a stop came before the job
  // started and it never opened the FIFOs. Either way no writer is coming: unblocking them
  // lets the capture end without waiting for a stop signal, which may never reach the
  // publisher (PID 1 ignores a SIGTERM that arrives before its handler is installed).
  void waitForExit(ioDir, () => finished).then(async (ended) => {
    if (!ended) return;
    // Unblocking works only once our own open is waiting in the kernel, which may not be
    // yet: keep at it until both ends are open.
    while (!finished && streams.some((stream) => !stream.isOpen())) {
      for (const stream of streams) if (!stream.isOpen()) unblock(stream.fifo);
      await sleep(50);
    }
  });

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
  const outcome = await Promise.race([drained, stop]);
  clearInterval(timer);
  if (outcome === 'grace-over') {
    for (const stream of streams) {
      unblock(stream.fifo);
      void stream.opened.then((readable) => readable.destroy());
    }
  }
  await flushing;

  const exit = await readExit(ioDir, outcome === 'drained' ? 5000 : 0);
  if (exit?.startError) log.warn('the job did not start', { executionId, reason: exit.startError });
  const wanted = options.outputs?.list ?? [];
  const outputs =
    wanted.length === 0 || exit?.startError
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
  const manifest = await storeResult(objects, executionId, captures, limits.keep, {
    exitCode: exit?.exitCode ?? null,
    signal: exit?.signal ?? null,
    partial:
      stopRequested ||
      outcome === 'grace-over' ||
      exit === undefined ||
      exit.timedOut ||
      exit.stopped === true,
    startedAt,
    endedAt: new Date().toISOString(),
    ...(exit?.timedOut ? { timedOut: true } : {}),
    ...(exit?.startError ? { startError: exit.startError } : {}),
    outputs,
  });
  await Promise.all(
    (['stdout', 'stderr'] as const).map((name) =>
      objects.delete(liveKey(executionId, name)).catch(() => undefined),
    ),
  );
  return manifest;
}
