// ferry-wrapper for a Fargate job of steps, run directly on this machine: the init container
// makes an io directory per step, and the steps share one clock for the job's timeout (the first
// to start records it, each later one gets what is left, and one with nothing left does not run).
// Outside a FIFO the io mode writes plain files, so no reader is needed here.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferryWrapper } from '../../shared/adapters/local/wrapper-binary.ts';
import { tempDir } from '../support/server.ts';

let wrapper: string;
let work: string;

beforeAll(async () => {
  work = await tempDir('ferry-wrapper-steps-');
  const built = await ferryWrapper([path.join(work, 'bin')]);
  if ('unavailable' in built) throw new Error(built.unavailable);
  wrapper = built.path;
});

afterAll(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

async function run(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(wrapper, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stderr };
}

const exitOf = async (dir: string) => JSON.parse(await fsp.readFile(path.join(dir, 'exit.json'), 'utf8'));

describe('ferry-wrapper for a job of steps', () => {
  it('makes the FIFOs of every step at --init, and refuses a count that is not one', async () => {
    const root = path.join(work, 'init');
    expect((await run(['--init', root, '3'])).code).toBe(0);
    for (const io of ['io', 'io/step-2', 'io/step-3']) {
      for (const name of ['stdout', 'stderr']) {
        expect(fs.statSync(path.join(root, io, name)).isFIFO(), `${io}/${name}`).toBe(true);
      }
    }
    expect(fs.existsSync(path.join(root, 'io/step-4'))).toBe(false);
    expect(fs.statSync(path.join(root, 'bin/ferry-wrapper')).mode & 0o111).toBeTruthy();
    for (const wrong of ['0', 'x', '3x', '65']) {
      const refused = await run(['--init', path.join(work, `init-${wrong}`), wrong]);
      expect(refused.code, wrong).toBe(125);
      expect(refused.stderr).toMatch(/^usage: ferry-wrapper --init DIR \[STEPS\]/);
    }
  });

  it('counts the timeout from the first step: a later step gets what is left, then nothing', async () => {
    const root = path.join(work, 'clock');
    const started = path.join(root, 'started');
    const dirs = [1, 2, 3].map((k) => path.join(root, `step-${k}`));
    for (const dir of dirs) await fsp.mkdir(dir, { recursive: true });
    const step = (dir: string, seconds: number) =>
      run(['--io', dir, '--timeout', '3', '--timeout-from', started, '--', 'sleep', String(seconds)]);

    const first = await step(dirs[0] ?? '', 1.5);
    expect(first.code).toBe(0);
    const recorded = Number((await fsp.readFile(started, 'utf8')).trim());
    expect(Date.now() - recorded).toBeGreaterThanOrEqual(1400);
    expect(await exitOf(dirs[0] ?? '')).toMatchObject({ exitCode: 0, timedOut: false });

    // About 1.5 s are left: the second step is stopped then, not after 3 s of its own.
    const before = Date.now();
    const second = await step(dirs[1] ?? '', 10);
    const took = Date.now() - before;
    expect(second.code).toBe(143);
    expect(took).toBeGreaterThan(1000);
    expect(took).toBeLessThan(2900);
    expect(await exitOf(dirs[1] ?? '')).toMatchObject({ exitCode: 143, signal: 'SIGTERM', timedOut: true });
    // The first step's time stands: the second did not record its own.
    expect(Number((await fsp.readFile(started, 'utf8')).trim())).toBe(recorded);

    // Nothing is left: the third step does not run, and its record says it timed out.
    const marker = path.join(root, 'ran');
    const third = await run([
      '--io',
      dirs[2] ?? '',
      '--timeout',
      '3',
      '--timeout-from',
      started,
      '--',
      'touch',
      marker,
    ]);
    expect(third.code).toBe(124);
    expect(fs.existsSync(marker)).toBe(false);
    expect(await exitOf(dirs[2] ?? '')).toEqual({
      exitCode: null,
      signal: null,
      timedOut: true,
      stopped: false,
      startError: null,
    });
    expect(await fsp.readFile(path.join(dirs[2] ?? '', 'stderr'), 'utf8')).toBe(
      "ferry-wrapper: the job's timeout of 3s ran out before this step started\n",
    );
  });

  it('takes --timeout-from only with --io and a timeout', async () => {
    expect((await run(['--io', work, '--timeout-from', path.join(work, 's'), '--', 'true'])).code).toBe(125);
    expect(
      (
        await run([
          '--spool',
          work,
          '--stdout-keep',
          '10:10',
          '--stderr-keep',
          '10:10',
          '--timeout',
          '5',
          '--timeout-from',
          path.join(work, 's'),
          '--',
          'true',
        ])
      ).code,
    ).toBe(125);
  });
});
