// The stage container of a Fargate task with data: before the job's container starts, fetches
// each input into its data volume and makes the volumes the job writes in writable by whatever
// user its image runs as. If an input cannot be had, it writes the wrapper's exit record with
// the reason, so the publisher stores a result that says why the command never ran, and exits
// non-zero, so ECS never starts the job's container.
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { StageOrder } from '../domain/fargate-task.ts';
import type { Logger } from '../logger.ts';
import type { InputFetcher } from '../ports.ts';

export interface StageOptions {
  readonly executionId: string;
  readonly order: StageOrder;
  /** Volume K is at dataRoot/K. */
  readonly dataRoot: string;
  /** Where the wrapper's exit record goes when the job will not run. */
  readonly ioDir: string;
  readonly fetcher: InputFetcher;
  readonly log: Logger;
  /** Aborted when the task is asked to stop. */
  readonly signal: AbortSignal;
}

/** Stages every input; resolves true when the job may run, false when it may not (and says why). */
export async function stageInputs(options: StageOptions): Promise<boolean> {
  const { order, dataRoot, log, executionId } = options;
  const volumeDir = (volume: number) => path.join(dataRoot, String(volume));
  try {
    for (const [index, volume] of order.volumes.entries()) {
      const dir = volumeDir(index);
      for (const inner of volume.mountPoints) await fsp.mkdir(path.join(dir, inner), { recursive: true });
      // Whichever user the image runs as may write its outputs there.
      if (volume.writable) await fsp.chmod(dir, 0o777);
    }
    let left = order.diskBytes;
    for (const input of order.inputs) {
      if (options.signal.aborted) throw new Error('the task was stopped while its inputs were staged');
      const started = Date.now();
      const target =
        input.relative === '' ? volumeDir(input.volume) : path.join(volumeDir(input.volume), input.relative);
      const got = await options.fetcher.fetch(input, target, { maxBytes: left, signal: options.signal });
      left -= got.bytes;
      // In a volume the job also writes in, an input is kept read-only by its permissions.
      if (order.volumes[input.volume]?.writable === true) await readOnly(target);
      log.info('input staged', {
        executionId,
        path: input.path,
        bytes: got.bytes,
        files: got.files,
        ms: Date.now() - started,
      });
    }
    return true;
  } catch (error) {
    const reason = options.signal.aborted
      ? 'the task was stopped while its inputs were staged'
      : (error as Error).message;
    log.error('the inputs could not be staged; the job will not run', { executionId, reason });
    await writeExitRecord(options.ioDir, {
      exitCode: null,
      signal: null,
      timedOut: false,
      ...(options.signal.aborted ? { stopped: true } : {}),
      startError: reason,
    });
    return false;
  }
}

async function readOnly(target: string): Promise<void> {
  const stat = await fsp.lstat(target);
  if (!stat.isDirectory()) {
    await fsp.chmod(target, 0o444);
    return;
  }
  for (const entry of await fsp.readdir(target, { withFileTypes: true })) {
    if (!entry.isSymbolicLink()) await readOnly(path.join(target, entry.name));
  }
  await fsp.chmod(target, 0o555);
}

/** Written whole or not at all: the publisher reads it as soon as it appears. */
export async function writeExitRecord(ioDir: string, record: object): Promise<void> {
  const file = path.join(ioDir, 'exit.json');
  const partial = `${file}.stage`;
  await fsp.writeFile(partial, JSON.stringify(record));
  await fsp.rename(partial, file);
}
