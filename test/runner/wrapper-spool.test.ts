// ferry-wrapper's spool mode, run directly on this machine (no container needed): what it keeps of
// a job's stdout and stderr, read back through SpoolFile, is exactly what Ferry's own capture keeps
// of the same bytes, under every rule; live reads taken while the job writes faster than they can
// keep up are never wrong; and the exit record says how the job ended.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferryWrapper } from '../../shared/adapters/local/wrapper-binary.ts';
import { SpoolFile, spoolKeepArgument } from '../../shared/capture/spool.ts';
import {
  type CaptureLimits,
  MIN_HEAD_TAIL_BYTES,
  StreamCapture,
} from '../../shared/capture/stream-capture.ts';
import type { Keep } from '../../shared/domain/job-spec.ts';
import { tempDir } from '../support/server.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

// Byte i is a hash of i, every value from 0 to 255 occurs: a slice from the wrong place differs.
const byteAt = (position: number): number => Math.imul(position ^ (position >>> 13), 0x9e3779b1) >>> 24;
function produced(length: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  for (let index = 0; index < length; index += 1) bytes[index] = byteAt(index);
  return bytes;
}

let wrapper: string;
let work: string;

beforeAll(async () => {
  work = await tempDir('ferry-wrapper-spool-');
  const built = await ferryWrapper([path.join(work, 'bin')]);
  if ('unavailable' in built) throw new Error(built.unavailable);
  wrapper = built.path;
});

afterAll(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

interface Run {
  readonly dir: string;
  readonly stdout: SpoolFile;
  readonly stderr: SpoolFile;
  readonly code: number | null;
}

/** Runs `command` under the wrapper in spool mode; `during` runs while it does. */
async function spooled(
  limits: { stdout: CaptureLimits; stderr: CaptureLimits },
  command: readonly string[],
  during: (spools: { stdout: SpoolFile; stderr: SpoolFile }) => Promise<void> = async () => undefined,
  /** Goes on in the spool directory of an earlier run, as a job's later step does. */
  after?: Run,
): Promise<Run> {
  const dir = after?.dir ?? (await fsp.mkdtemp(path.join(work, 'run-')));
  const spools = {
    stdout: new SpoolFile(path.join(dir, 'stdout.spool'), limits.stdout),
    stderr: new SpoolFile(path.join(dir, 'stderr.spool'), limits.stderr),
  };
  const child = spawn(
    wrapper,
    [
      '--spool',
      dir,
      '--stdout-keep',
      spoolKeepArgument(limits.stdout),
      '--stderr-keep',
      spoolKeepArgument(limits.stderr),
      ...(after === undefined ? [] : ['--append']),
      '--',
      ...command,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const closed = once(child, 'close');
  await during(spools);
  const [code] = (await closed) as [number | null];
  return { dir, ...spools, code };
}

const exitRecord = async (dir: string) => JSON.parse(await fsp.readFile(path.join(dir, 'exit.json'), 'utf8'));

/** What Ferry's in-process capture stores of `bytes` under `limits`. */
function reference(limits: CaptureLimits, bytes: Buffer) {
  const capture = new StreamCapture(limits);
  // In odd-sized pieces, as a pipe would hand them over.
  for (let at = 0; at < bytes.length; at += 7919) capture.write(bytes.subarray(at, at + 7919));
  return capture.finish();
}

describe('ferry-wrapper --spool', () => {
  const cases: { name: string; bytes: number; limit: number; keep: Keep }[] = [
    { name: 'nothing at all', bytes: 0, limit: 64 * KiB, keep: 'head+tail' },
    { name: 'less than the limit', bytes: 1000, limit: 64 * KiB, keep: 'head+tail' },
    { name: 'exactly the limit', bytes: 64 * KiB, limit: 64 * KiB, keep: 'head+tail' },
    { name: 'one byte past the limit', bytes: 64 * KiB + 1, limit: 64 * KiB, keep: 'head+tail' },
    {
      name: '5 MiB through a 64 KiB limit (the ring wraps many times)',
      bytes: 5 * MiB,
      limit: 64 * KiB,
      keep: 'head+tail',
    },
    { name: '5 MiB keeping the head only', bytes: 5 * MiB, limit: 100 * KiB, keep: 'head' },
    { name: '5 MiB keeping the tail only', bytes: 5 * MiB, limit: 100 * KiB, keep: 'tail' },
    {
      name: 'a limit too small for a marker',
      bytes: 3000,
      limit: MIN_HEAD_TAIL_BYTES - 1,
      keep: 'head+tail',
    },
    { name: 'a limit of zero', bytes: 3000, limit: 0, keep: 'tail' },
  ];

  it.each(cases)('keeps $name exactly as Ferry’s capture would', async ({ bytes, limit, keep }) => {
    const data = produced(bytes);
    const file = path.join(work, `data-${bytes}`);
    await fsp.writeFile(file, data);
    const limits = {
      stdout: { storedBytes: limit, inlineBytes: 4 * KiB, keep },
      stderr: { storedBytes: 1 * KiB, inlineBytes: 4 * KiB, keep: 'head+tail' as const },
    };

    const run = await spooled(limits, ['sh', '-c', `cat ${file}; echo to-stderr >&2`]);

    expect(run.code).toBe(0);
    const stdout = (await run.stdout.restore()).finish();
    const expected = reference(limits.stdout, data);
    expect(stdout.stored.equals(expected.stored)).toBe(true);
    expect(stdout.summary).toEqual(expected.summary);
    expect((await run.stderr.restore()).finish().stored.toString()).toBe('to-stderr\n');
    expect(await exitRecord(run.dir)).toEqual({
      exitCode: 0,
      signal: null,
      timedOut: false,
      stopped: false,
      startError: null,
    });
  });

  it('serves live reads that are always the stream’s bytes, even while the ring is overwritten', async () => {
    const piece = produced(1 * MiB + 17);
    const file = path.join(work, 'piece');
    await fsp.writeFile(file, piece);
    const repeats = 40;
    const limits = {
      stdout: { storedBytes: 256 * KiB, inlineBytes: 4 * KiB, keep: 'head+tail' as const },
      stderr: { storedBytes: 1 * KiB, inlineBytes: 4 * KiB, keep: 'head+tail' as const },
    };
    const expectedAt = (position: number) => piece[position % piece.length];
    let reads = 0;
    let served = 0;
    let skipped = 0;
    let wrong = 0;
    let ended = false;

    const run = await spooled(
      limits,
      ['sh', '-c', `for i in $(seq ${repeats}); do cat ${file}; done`],
      async (spools) => {
        let offset = 0;
        const watcher = (async () => {
          while (!ended) {
            const read = await spools.stdout.readRange(offset, 32 * KiB);
            reads += 1;
            const start = read.nextOffset - read.data.length;
            for (let i = 0; i < read.data.length; i += 1)
              if (read.data[i] !== expectedAt(start + i)) wrong += 1;
            if (start - offset !== read.skippedBytes) wrong += 1;
            served += read.data.length;
            skipped += read.skippedBytes;
            offset = read.nextOffset;
          }
        })();
        await new Promise((resolve) => setTimeout(resolve, 50));
        await expect.poll(() => spools.stdout.totalBytes(), { timeout: 30_000 }).toBe(piece.length * repeats);
        ended = true;
        await watcher;
      },
    );

    expect(run.code).toBe(0);
    expect(wrong).toBe(0);
    expect(reads).toBeGreaterThan(10);
    expect(served).toBeGreaterThan(0);
    expect(served + skipped).toBeLessThanOrEqual(piece.length * repeats);
  });

  it('records a program that cannot be run, and says so on stderr', async () => {
    const limits = { storedBytes: 1 * KiB, inlineBytes: 1 * KiB, keep: 'head+tail' as const };

    const run = await spooled({ stdout: limits, stderr: limits }, ['ferry-no-such-program']);

    expect(run.code).toBe(127);
    expect(await exitRecord(run.dir)).toMatchObject({
      exitCode: 127,
      startError: 'cannot run ferry-no-such-program: No such file or directory',
    });
    expect((await run.stderr.restore()).finish().stored.toString()).toBe(
      'ferry-wrapper: cannot run ferry-no-such-program: No such file or directory\n',
    );
  });

  it('passes a stop on to the job and keeps what it printed first', async () => {
    const limits = { storedBytes: 1 * KiB, inlineBytes: 1 * KiB, keep: 'head+tail' as const };
    let child: ReturnType<typeof spawn> | undefined;
    const dir = await fsp.mkdtemp(path.join(work, 'stop-'));
    child = spawn(
      wrapper,
      [
        '--spool',
        dir,
        '--stdout-keep',
        spoolKeepArgument(limits),
        '--stderr-keep',
        spoolKeepArgument(limits),
        '--',
        'sh',
        '-c',
        'echo started; exec sleep 60',
      ],
      { stdio: 'ignore' },
    );
    const stdout = new SpoolFile(path.join(dir, 'stdout.spool'), limits);
    await expect.poll(() => stdout.totalBytes(), { timeout: 10_000 }).toBe('started\n'.length);
    const closed = once(child, 'close');
    child.kill('SIGTERM');
    const [code] = (await closed) as [number | null];
    child = undefined;

    expect(code).toBe(128 + 15);
    expect(await exitRecord(dir)).toMatchObject({ exitCode: 143, signal: 'SIGTERM', stopped: true });
    expect((await stdout.restore()).finish().stored.toString()).toBe('started\n');
  });

  it('goes on with the stream of an earlier run with --append, and starts afresh if its limits differ', async () => {
    const limits = { storedBytes: 64 * KiB, inlineBytes: 4 * KiB, keep: 'head+tail' as const };
    const both = { stdout: limits, stderr: limits };
    const bytes = produced(300 * KiB);
    const cut = 100 * KiB;
    const parts = [bytes.subarray(0, cut), bytes.subarray(cut)];
    const files = await Promise.all(
      parts.map(async (part, index) => {
        const file = path.join(work, `append-${index}`);
        await fsp.writeFile(file, part);
        return file;
      }),
    );
    const first = await spooled(both, ['cat', files[0] ?? '']);
    const second = await spooled(both, ['cat', files[1] ?? ''], undefined, first);
    expect(second.code).toBe(0);
    const kept = (await second.stdout.restore()).finish();
    const expected = reference(limits, bytes);
    expect(kept.summary.totalBytes).toBe(bytes.length);
    expect(kept.stored.equals(expected.stored)).toBe(true);
    // Other limits: the earlier stream cannot be read on with them, so it is not.
    const other = { ...limits, storedBytes: 32 * KiB };
    const third = await spooled({ stdout: other, stderr: other }, ['echo', 'fresh'], undefined, second);
    expect((await third.stdout.restore()).finish().stored.toString()).toBe('fresh\n');
    // Only a spool goes on: --append beside --io is a usage error.
    const misused = spawn(wrapper, ['--io', work, '--append', '--', 'true'], { stdio: 'ignore' });
    expect((await once(misused, 'close'))[0]).toBe(125);
  });

  it('is built once per source, and says why when there is no compiler', async () => {
    const dir = path.join(work, 'builds');

    const first = await ferryWrapper([dir]);
    const again = await ferryWrapper([dir], path.join(work, 'no-such-cc'));
    const none = await ferryWrapper([path.join(work, 'elsewhere')], path.join(work, 'no-such-cc'));

    expect(first).toEqual({ path: expect.stringMatching(/ferry-wrapper-[0-9a-f]{16}$/) });
    // Already there: no compiler is needed to find it.
    expect(again).toEqual(first);
    expect(none).toEqual({ unavailable: expect.stringContaining('no C compiler') });
  });
});
