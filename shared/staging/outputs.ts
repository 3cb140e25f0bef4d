// Collecting a job's outputs once its command has exited: each file streamed into the result
// store with its SHA-256, within the job's limits, never following a symbolic link. The same
// code runs on the host for the local backends and in the Fargate publisher for a task.
//
// Limits, in the order outputs are listed and, within a directory, in path order:
// - a FILE output larger than what is left of its limit (outputBytes, and of outputsBytes for
//   all outputs) is stored truncated to what is left: its head, flagged `truncated`;
// - a file of a DIRECTORY output that does not fit what is left is skipped whole (a later,
//   smaller one may still fit), and so is every file past the outputFiles count; the output is
//   flagged `truncated` and lists what it skipped and why.
// Symbolic links, FIFOs, sockets and devices are listed as skipped, never read or followed.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { type OutputEntry, type OutputResult, resultKeys, type SkippedEntry } from '../domain/execution.ts';
import type { JobOutput, OutputLimits } from '../domain/job-spec.ts';
import { formatBytes } from '../domain/units.ts';
import type { ResultSink } from '../ports.ts';

/** Listed per output at most; the count says how many more there were. */
export const SKIPPED_LISTED = 100;
/** Files of a directory decided, then stored, together. */
const BATCH_FILES = 32;
/** S3's longest key, in UTF-8 bytes. */
const MAX_KEY_BYTES = 1024;

/** A file that could not be opened as a plain file (gone, swapped for a link, replaced). */
class NotReadable extends Error {}

interface Budget {
  bytesLeft: number;
  filesLeft: number;
}

/** Where an output is on this machine, or why it is not read at all. */
export type OutputPlace = string | { readonly refused: string };

/**
 * Collects `outputs` into `sink` under executions/{id}/outputs/. `locate` gives where each
 * output is on this machine (a path no one but the finished job has written under).
 */
export async function collectOutputs<Output extends JobOutput>(
  executionId: string,
  outputs: readonly Output[],
  locate: (output: Output) => Promise<OutputPlace>,
  sink: ResultSink,
  limits: Pick<OutputLimits, 'outputBytes' | 'outputsBytes' | 'outputFiles'>,
): Promise<OutputResult[]> {
  const budget: Budget = { bytesLeft: limits.outputsBytes, filesLeft: limits.outputFiles };
  const results: OutputResult[] = [];
  for (const output of outputs) {
    const where = await locate(output);
    if (typeof where !== 'string') {
      results.push(notStored(executionId, output, where.refused));
      continue;
    }
    results.push(
      output.type === 'FILE'
        ? await collectFile(executionId, output, where, sink, limits.outputBytes, budget)
        : await collectDirectory(executionId, output, where, sink, limits.outputBytes, budget),
    );
  }
  return results;
}

/** The object of a FILE output, or the prefix (ending in "/") of a DIRECTORY output's files. */
const outputKey = (executionId: string, output: JobOutput): string =>
  resultKeys(executionId).output(output.name) + (output.type === 'DIRECTORY' ? '/' : '');

/** An output of which nothing is stored, for `reason` (`bytes`: its size, when known). */
const notStored = (executionId: string, output: JobOutput, reason: string, bytes?: number): OutputResult => ({
  ...base(output, outputKey(executionId, output)),
  bytes: 0,
  totalBytes: bytes ?? 0,
  files: 0,
  truncated: true,
  ...(output.type === 'DIRECTORY' ? { entries: [] } : {}),
  skipped: [{ path: '', ...(bytes === undefined ? {} : { bytes }), reason }],
  skippedCount: 1,
});

const base = (output: JobOutput, key: string) => ({
  name: output.name,
  path: output.path,
  type: output.type,
  key,
});

async function collectFile(
  executionId: string,
  output: JobOutput,
  where: string,
  sink: ResultSink,
  outputBytes: number,
  budget: Budget,
): Promise<OutputResult> {
  const key = outputKey(executionId, output);
  const stat = await fsp.lstat(where).catch(() => undefined);
  if (stat === undefined) {
    return { ...base(output, key), bytes: 0, totalBytes: 0, files: 0, truncated: false, missing: true };
  }
  if (!stat.isFile()) {
    const reason = stat.isSymbolicLink()
      ? 'a symbolic link: not followed'
      : stat.isDirectory()
        ? 'a directory, not a file (declare the output a DIRECTORY)'
        : 'not a plain file';
    return notStored(executionId, output, reason);
  }
  if (budget.filesLeft <= 0) return notStored(executionId, output, 'past the outputFiles limit', stat.size);
  const room = Math.min(outputBytes, budget.bytesLeft);
  let stored: Awaited<ReturnType<typeof storeFile>>;
  try {
    stored = await storeFile(where, key, sink, room);
  } catch (error) {
    if (error instanceof NotReadable) return notStored(executionId, output, error.message, stat.size);
    throw error;
  }
  budget.bytesLeft -= stored.bytes;
  budget.filesLeft -= 1;
  return {
    ...base(output, key),
    bytes: stored.bytes,
    totalBytes: stored.size,
    files: 1,
    truncated: stored.bytes < stored.size,
    sha256: stored.sha256,
  };
}

async function collectDirectory(
  executionId: string,
  output: JobOutput,
  where: string,
  sink: ResultSink,
  outputBytes: number,
  budget: Budget,
): Promise<OutputResult> {
  const prefix = outputKey(executionId, output);
  const stat = await fsp.lstat(where).catch(() => undefined);
  if (stat === undefined) {
    return {
      ...base(output, prefix),
      bytes: 0,
      totalBytes: 0,
      files: 0,
      entries: [],
      truncated: false,
      missing: true,
    };
  }
  if (!stat.isDirectory()) {
    const reason = stat.isSymbolicLink()
      ? 'a symbolic link: not followed'
      : 'not a directory (declare the output a FILE)';
    return notStored(executionId, output, reason);
  }
  const entries: OutputEntry[] = [];
  const skipped: SkippedEntry[] = [];
  let skippedCount = 0;
  let bytes = 0;
  let totalBytes = 0;
  const skip = (entry: SkippedEntry) => {
    skippedCount++;
    if (skipped.length < SKIPPED_LISTED) skipped.push(entry);
  };
  // Files are decided a batch at a time, their room reserved, then stored: a store that asks
  // for permission per key (upload links) asks once per batch.
  let batch: { relative: string; size: number }[] = [];
  const storeBatch = async () => {
    const files = batch;
    batch = [];
    if (files.length === 0) return;
    await sink.expect?.(files.map((file) => `${prefix}${file.relative}`));
    for (const file of files) {
      let stored: Awaited<ReturnType<typeof storeFile>>;
      try {
        stored = await storeFile(
          path.join(where, file.relative),
          `${prefix}${file.relative}`,
          sink,
          file.size,
        );
      } catch (error) {
        if (!(error instanceof NotReadable)) throw error;
        // Gone or changed since it was listed: left out, and its reserved room given back.
        skip({ path: file.relative, bytes: file.size, reason: error.message });
        bytes -= file.size;
        budget.bytesLeft += file.size;
        budget.filesLeft += 1;
        continue;
      }
      if (stored.bytes < stored.size) {
        // It grew after it was listed (nothing should be writing now): what was read is kept.
        skip({ path: file.relative, bytes: stored.size, reason: 'changed while it was stored; cut' });
      }
      entries.push({ path: file.relative, bytes: stored.bytes, sha256: stored.sha256 });
      // The room was reserved at the listed size; give back what was not used.
      bytes += stored.bytes - file.size;
      budget.bytesLeft += file.size - stored.bytes;
    }
  };
  for await (const file of walk(where, '')) {
    if (file.kind !== 'file') {
      skip({
        path: file.relative,
        reason: file.kind === 'link' ? 'a symbolic link: not followed' : 'not a plain file',
      });
      continue;
    }
    totalBytes += file.size;
    if (Buffer.byteLength(`${prefix}${file.relative}`) > MAX_KEY_BYTES) {
      skip({ path: file.relative, bytes: file.size, reason: 'its path is too long for the result store' });
      continue;
    }
    if (budget.filesLeft <= 0) {
      skip({ path: file.relative, bytes: file.size, reason: 'past the outputFiles limit' });
      continue;
    }
    const room = Math.min(outputBytes - bytes, budget.bytesLeft);
    if (file.size > room) {
      skip({
        path: file.relative,
        bytes: file.size,
        reason: `${formatBytes(file.size)} does not fit the ${formatBytes(Math.max(0, room))} left of the limits`,
      });
      continue;
    }
    batch.push({ relative: file.relative, size: file.size });
    bytes += file.size;
    budget.bytesLeft -= file.size;
    budget.filesLeft -= 1;
    if (batch.length >= BATCH_FILES) await storeBatch();
  }
  await storeBatch();
  return {
    ...base(output, prefix),
    bytes,
    totalBytes,
    files: entries.length,
    truncated: skippedCount > 0,
    entries,
    ...(skippedCount > 0 ? { skipped, skippedCount } : {}),
  };
}

type Found =
  | { readonly kind: 'file'; readonly relative: string; readonly size: number }
  | { readonly kind: 'link' | 'other'; readonly relative: string };

/** Everything under `dir`, depth first in name order, without following symbolic links. */
async function* walk(dir: string, relative: string): AsyncGenerator<Found> {
  const names = (await fsp.readdir(path.join(dir, relative), { withFileTypes: true })).sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  );
  for (const entry of names) {
    const inner = relative === '' ? entry.name : `${relative}/${entry.name}`;
    if (entry.isDirectory()) yield* walk(dir, inner);
    else if (entry.isSymbolicLink()) yield { kind: 'link', relative: inner };
    else if (entry.isFile()) {
      const stat = await fsp.lstat(path.join(dir, inner));
      yield stat.isFile()
        ? { kind: 'file', relative: inner, size: stat.size }
        : { kind: 'other', relative: inner };
    } else yield { kind: 'other', relative: inner };
  }
}

/**
 * Streams up to `room` bytes of a plain file into the sink, hashing what goes. Opened without
 * following a symbolic link; its size is the open file's, so a swap after the listing is seen.
 */
async function storeFile(
  file: string,
  key: string,
  sink: ResultSink,
  room: number,
): Promise<{ bytes: number; size: number; sha256: string }> {
  const handle = await fsp
    .open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
    .catch((error: NodeJS.ErrnoException) => {
      throw new NotReadable(
        error.code === 'ENOENT'
          ? 'gone before it was stored'
          : error.code === 'ELOOP'
            ? 'a symbolic link: not followed'
            : `could not be opened: ${error.code ?? error.message}`,
      );
    });
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new NotReadable('not a plain file');
    const hash = createHash('sha256');
    let bytes = 0;
    const take = Math.min(room, stat.size);
    const counted = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        const part = chunk.subarray(0, Math.max(0, take - bytes));
        bytes += part.length;
        hash.update(part);
        done(null, part);
      },
    });
    const body =
      take === 0 ? Readable.from([]) : handle.createReadStream({ start: 0, end: take - 1, autoClose: false });
    body.once('error', (error: Error) => counted.destroy(error));
    await sink.put(key, body.pipe(counted), 'application/octet-stream');
    return { bytes, size: stat.size, sha256: hash.digest('hex') };
  } finally {
    await handle.close();
  }
}
