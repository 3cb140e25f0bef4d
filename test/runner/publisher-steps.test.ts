// The publisher of a Fargate job of steps, run on this machine with the real wrapper and FIFOs:
// the test starts each step's wrapper as ECS would (the next one only after the one before it
// let it), and the publisher reads each step's output in turn into the job's streams, records
// how each step ended, and does not wait for a step that will never start.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DirectoryObjectStore } from '../../shared/adapters/local/dir-object-store.ts';
import { ferryWrapper } from '../../shared/adapters/local/wrapper-binary.ts';
import { resultKeys } from '../../shared/domain/execution.ts';
import { DEFAULT_OUTPUT_LIMITS } from '../../shared/domain/job-spec.ts';
import { silentLogger } from '../../shared/logger.ts';
import { publish } from '../../shared/runner/publisher.ts';
import { tempDir } from '../support/server.ts';

let wrapper: string;
let work: string;

beforeAll(async () => {
  work = await tempDir('ferry-publisher-steps-');
  const built = await ferryWrapper([path.join(work, 'bin')]);
  if ('unavailable' in built) throw new Error(built.unavailable);
  wrapper = built.path;
});

afterAll(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

async function run(args: string[]): Promise<number | null> {
  const child = spawn(wrapper, args, { stdio: 'ignore' });
  const [code] = (await once(child, 'exit')) as [number | null];
  return code;
}

/** A task's shared directory, made by the init container's wrapper, and a publisher reading it. */
async function task(name: string, ignoreErrors: boolean[], timeoutSeconds = 60) {
  const root = path.join(work, name);
  expect(await run(['--init', root, String(ignoreErrors.length)])).toBe(0);
  const objects = await DirectoryObjectStore.open(path.join(root, 'store'), () => 'http://127.0.0.1:1');
  let stop: () => void = () => {};
  const stopped = new Promise<void>((resolve) => {
    stop = resolve;
  });
  const executionId = 'ex_01jh5q8k3m0123456789abcdef';
  const published = publish({
    executionId,
    ioDir: path.join(root, 'io'),
    steps: ignoreErrors.map((ignoreError) => ({ ignoreError })),
    limits: DEFAULT_OUTPUT_LIMITS,
    objects,
    log: silentLogger,
    flushSeconds: 60,
    stopGraceSeconds: 20,
    stopped,
  });
  const step = (index: number, script: string) =>
    run([
      '--io',
      index === 0 ? path.join(root, 'io') : path.join(root, 'io', `step-${index + 1}`),
      '--timeout',
      String(timeoutSeconds),
      '--timeout-from',
      path.join(root, 'io', 'started'),
      '--',
      'sh',
      '-c',
      script,
    ]);
  const stored = async (key: 'stdout' | 'stderr') =>
    (await objects.get(resultKeys(executionId)[key]))?.toString() ?? '';
  return { published, step, stop, stored };
}

describe('the publisher of a job of steps', () => {
  it('reads each step in turn, and ends at a failure that is not ignored', async () => {
    const t = await task('failing', [false, true, false, false]);
    expect(await t.step(0, 'echo one; echo err-one >&2')).toBe(0);
    // A failure that is ignored: ECS starts the next container all the same.
    expect(await t.step(1, 'echo two; exit 5')).toBe(5);
    expect(await t.step(2, 'echo three; exit 3')).toBe(3);
    // ECS never starts the fourth: its dependency failed. The publisher must not wait for it.
    const manifest = await t.published;
    expect(manifest.exitCode).toBe(3);
    expect(manifest.partial).toBe(false);
    expect(manifest.steps?.map((s) => [s.exitCode, s.stdoutFrom, s.stderrFrom])).toEqual([
      [0, 0, 0],
      [5, 4, 8],
      [3, 8, 8],
    ]);
    expect(await t.stored('stdout')).toBe('one\ntwo\nthree\n');
    expect(await t.stored('stderr')).toBe('err-one\n');
  });

  it('ends soon after a stop that came between steps, without the step that never started', async () => {
    const t = await task('stopped', [false, false]);
    expect(await t.step(0, 'echo one')).toBe(0);
    // The publisher goes on to wait for the second step's output; the task is stopped before
    // ECS starts that step's container, so it never does.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const asked = Date.now();
    t.stop();
    const manifest = await t.published;
    // Not the 20 s grace a running step would get to finish its output.
    expect(Date.now() - asked).toBeLessThan(8000);
    expect(manifest.partial).toBe(true);
    expect(manifest.exitCode).toBe(0);
    expect(manifest.steps?.map((s) => s.exitCode)).toEqual([0]);
    expect(await t.stored('stdout')).toBe('one\n');
  });

  it('records no step that found the job’s time gone when it started, as the local backends do', async () => {
    const t = await task('no-time-left', [false, false], 2);
    expect(await t.step(0, 'echo one; sleep 1.8')).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 400));
    // ECS starts the second step; its wrapper finds nothing left of the 2 s and does not run it.
    expect(await t.step(1, 'echo never')).toBe(124);
    const manifest = await t.published;
    expect(manifest.timedOut).toBe(true);
    expect(manifest.partial).toBe(true);
    expect(manifest.steps?.map((s) => s.exitCode)).toEqual([0]);
    expect(manifest.exitCode).toBe(0);
    expect(await t.stored('stdout')).toBe('one\n');
  });
});
