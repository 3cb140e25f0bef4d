// Storing a run's result, the same way wherever it ran: stdout and stderr as kept, then the
// manifest `result.json` last, so its presence means the result is complete. Also the
// live window the Fargate publisher refreshes while a job runs.
import { createHash } from 'node:crypto';
import type { OutputResult, ResultManifest, StepResult } from '../domain/execution.ts';
import { resultKeys } from '../domain/execution.ts';
import type { Keep } from '../domain/job-spec.ts';
import type { ResultSink } from '../ports.ts';
import type { RangeRead, StreamCapture } from './stream-capture.ts';

export interface RunEnding {
  readonly exitCode: number | null;
  readonly signal: string | null;
  /** Stopped (cancel, timeout) or recovered: what was captured may not be all there was. */
  readonly partial: boolean;
  readonly timedOut?: boolean;
  readonly startedAt: string | null;
  readonly endedAt: string;
  /** The outputs, already stored under outputs/. */
  readonly outputs?: readonly OutputResult[];
  /** Why the command never ran (an input that could not be had, a program that is not there). */
  readonly startError?: string;
  /** A job with steps: how each that ran ended. */
  readonly steps?: readonly StepResult[];
}

export async function storeResult(
  objects: ResultSink,
  executionId: string,
  captures: { readonly stdout: StreamCapture; readonly stderr: StreamCapture },
  keep: Keep,
  ending: RunEnding,
): Promise<ResultManifest> {
  const keys = resultKeys(executionId);
  const stdout = captures.stdout.finish();
  const stderr = captures.stderr.finish();
  const manifest: ResultManifest = {
    executionId,
    exitCode: ending.exitCode,
    signal: ending.signal,
    partial: ending.partial,
    ...(ending.timedOut ? { timedOut: true } : {}),
    ...(ending.startError === undefined ? {} : { startError: ending.startError }),
    startedAt: ending.startedAt,
    endedAt: ending.endedAt,
    stdout: { ...stdout.summary, sha256: sha256(stdout.stored) },
    stderr: { ...stderr.summary, sha256: sha256(stderr.stored) },
    outputs: ending.outputs ?? [],
    keep,
    ...(ending.steps === undefined ? {} : { steps: ending.steps }),
  };
  await objects.put(keys.stdout, stdout.stored, 'application/octet-stream');
  await objects.put(keys.stderr, stderr.stored, 'application/octet-stream');
  await objects.put(keys.manifest, JSON.stringify(manifest, null, 2), 'application/json');
  return manifest;
}

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

export const liveKey = (executionId: string, stream: 'stdout' | 'stderr'): string =>
  `executions/${executionId}/live/${stream}`;

/** How much of the end of each stream the live object holds. */
export const LIVE_WINDOW_BYTES = 1024 * 1024;

/**
 * The live object: one JSON line saying where its bytes sit in the stream, then the bytes
 * of the last window of output (as far as the capture keeps them).
 */
export function encodeLive(capture: StreamCapture): Buffer {
  const total = capture.totalBytes;
  const read = capture.readRange(Math.max(0, total - LIVE_WINDOW_BYTES), LIVE_WINDOW_BYTES);
  const start = read.nextOffset - read.data.length;
  return Buffer.concat([Buffer.from(`${JSON.stringify({ start, total })}\n`), read.data]);
}

/** Reads `maxBytes` from stream position `offset` out of a live object. */
export function readLiveObject(object: Buffer, offset: number, maxBytes: number): RangeRead {
  const newline = object.indexOf(10);
  const header = JSON.parse(object.subarray(0, newline).toString('utf8')) as { start: number; total: number };
  const data = object.subarray(newline + 1);
  if (offset >= header.total) return { data: Buffer.alloc(0), nextOffset: offset, skippedBytes: 0 };
  const from = Math.max(offset, header.start);
  const chunk = data.subarray(from - header.start, from - header.start + maxBytes);
  return { data: chunk, nextOffset: from + chunk.length, skippedBytes: from - offset };
}
