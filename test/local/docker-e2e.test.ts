// The local executor with the Docker backend, end to end: jobs go in over HTTP, run as real
// containers on the engine, and what comes back (states, exit codes, exact output bytes, the
// manifest) and what is left behind (no containers) is checked from the outside.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ApiError, FerryClient } from '../../cli/client.ts';
import type { Execution, ResultManifest } from '../../shared/domain/execution.ts';
import type { ExecutionState } from '../../shared/domain/states.ts';
import {
  containersOf,
  followLog,
  rawRequest,
  removeContainersOf,
  sampleContainers,
  sleep,
  spacedNumbers,
} from '../support/docker.ts';
import {
  runTime,
  startServer,
  stdoutOf,
  submit,
  type TestServer,
  tempDir,
  waitDone,
  waitFor,
} from '../support/server.ts';

const dockerAvailable = inject('dockerAvailable');
const image = inject('testImage');
if (!dockerAvailable && process.env.CI === 'true') {
  throw new Error('CI=true but no Docker Engine is available: the Docker end-to-end suite must run');
}

const MiB = 1024 * 1024;

interface ResultReply {
  readonly executionId: string;
  readonly state: ExecutionState;
  readonly review: string;
  readonly manifest: ResultManifest;
  readonly links: { readonly stdout: string; readonly stderr: string };
}

/** A small job on the test image; the resources leave room for several at once on a 2-core host. */
const job = (command: string[], extra: Record<string, unknown> = {}) => ({
  image,
  command,
  resources: { cpu: 0.25, memory: 64 },
  ...extra,
});

/** When the execution first entered `state`, in ms since the epoch. */
function enteredAt(execution: Execution, state: ExecutionState): number {
  const entry = execution.history.find((h) => h.state === state);
  if (entry === undefined) {
    throw new Error(
      `${execution.id} never was ${state}: ${execution.history.map((h) => h.state).join(' → ')}`,
    );
  }
  return Date.parse(entry.at);
}

/** When the execution reached its terminal state, in ms since the epoch. */
const endedAt = (execution: Execution): number => enteredAt(execution, execution.state);

/** The most intervals that hold at one instant; an interval ending at t frees its slot before one starting at t. */
function maxOverlap(intervals: readonly { start: number; end: number }[]): number {
  const edges = intervals.flatMap((i) => [
    { at: i.start, delta: 1 },
    { at: i.end, delta: -1 },
  ]);
  edges.sort((a, b) => a.at - b.at || a.delta - b.delta);
  let open = 0;
  let most = 0;
  for (const edge of edges) {
    open += edge.delta;
    most = Math.max(most, open);
  }
  return most;
}

async function result(client: FerryClient, id: string): Promise<ResultReply> {
  return (await client.json<ResultReply>('GET', `/v1/executions/${id}/result`)).body;
}

async function statusOf(request: Promise<unknown>): Promise<number> {
  try {
    await request;
    return 200;
  } catch (error) {
    if (error instanceof ApiError) return error.status;
    throw error;
  }
}

/** A server for one describe block; it remembers what was submitted so a failed test leaves no container. */
function serverFor(env: Record<string, string>) {
  const submitted: string[] = [];
  const context = {
    ferry: undefined as unknown as TestServer,
    async run(spec: Record<string, unknown>, client?: FerryClient): Promise<Execution> {
      const execution = await submit(client ?? context.ferry.client, spec);
      submitted.push(execution.id);
      return execution;
    },
  };
  beforeAll(async () => {
    context.ferry = await startServer({ FERRY_BACKEND: 'docker', ...env });
  });
  afterAll(async () => {
    await context.ferry?.close();
    await removeContainersOf(submitted);
    if (context.ferry !== undefined) await fsp.rm(context.ferry.dataDir, { recursive: true, force: true });
  });
  return context;
}

describe.skipIf(!dockerAvailable)('the Docker backend, end to end over HTTP', () => {
  describe('a job and its output', () => {
    const server = serverFor({});

    it('runs echo hello to COMPLETED with exit code 0, exact stdout and a manifest that adds up', async () => {
      const { client } = server.ferry;

      const submitted = await server.run(job(['echo', 'hello']));
      const done = await waitDone(client, submitted.id);

      expect(done.state).toBe('COMPLETED');
      expect(done.exitCode).toBe(0);
      expect((await stdoutOf(client, done.id)).toString('latin1')).toBe('hello\n');
      expect(done.result).toMatchObject({
        review: 'PENDING',
        exitCode: 0,
        stdout: { totalBytes: 6, storedBytes: 6, truncated: false },
        stderr: { totalBytes: 0, storedBytes: 0, truncated: false },
      });
      const view = await result(client, done.id);
      expect(view.manifest).toMatchObject({
        executionId: done.id,
        exitCode: 0,
        signal: null,
        partial: false,
        stdout: {
          totalBytes: 6,
          storedBytes: 6,
          truncated: false,
          omittedBytes: 0,
          inline: 'hello\n',
          inlineEncoding: 'utf8',
          inlineTruncated: false,
        },
        stderr: { totalBytes: 0, storedBytes: 0, truncated: false, inline: '', inlineTruncated: false },
      });
      const download = await fetch(view.links.stdout);
      expect(Buffer.from(await download.arrayBuffer()).toString('latin1')).toBe('hello\n');
      expect(await containersOf([done.id])).toEqual([]);
    });

    it('records a non-zero exit as COMPLETED with that exit code', async () => {
      const { client } = server.ferry;

      const submitted = await server.run(job(['sh', '-c', 'exit 7']));
      const done = await waitDone(client, submitted.id);

      expect(done.state).toBe('COMPLETED');
      expect(done.exitCode).toBe(7);
      expect((await result(client, done.id)).manifest.exitCode).toBe(7);
      expect(await containersOf([done.id])).toEqual([]);
    });

    it('keeps stderr apart: stdout empty, stderr exact', async () => {
      const { client } = server.ferry;

      const submitted = await server.run(job(['sh', '-c', 'echo oops >&2; printf "second\\n" >&2']));
      const done = await waitDone(client, submitted.id);

      expect(done.state).toBe('COMPLETED');
      expect(await stdoutOf(client, done.id)).toHaveLength(0);
      expect((await stdoutOf(client, done.id, 'stderr')).toString('latin1')).toBe('oops\nsecond\n');
      const { manifest } = await result(client, done.id);
      expect(manifest.stdout).toMatchObject({ totalBytes: 0, storedBytes: 0, inline: '' });
      expect(manifest.stderr).toMatchObject({ totalBytes: 12, storedBytes: 12, inline: 'oops\nsecond\n' });
    });

    it('stores binary output byte for byte (all 256 byte values)', async () => {
      const { client } = server.ferry;
      const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const format = Array.from({ length: 256 }, (_, i) => `\\${i.toString(8).padStart(3, '0')}`).join('');

      const submitted = await server.run(job(['printf', format]));
      const done = await waitDone(client, submitted.id);

      expect(done.state).toBe('COMPLETED');
      expect((await stdoutOf(client, done.id)).equals(allBytes)).toBe(true);
      const { manifest } = await result(client, done.id);
      expect(manifest.stdout).toMatchObject({ totalBytes: 256, storedBytes: 256, inlineEncoding: 'base64' });
      expect(Buffer.from(manifest.stdout.inline, 'base64').equals(allBytes)).toBe(true);
    });

    it('never reads a host file in place of the output a job swapped for a link', async () => {
      const { client } = server.ferry;
      const hostFile = path.join(await tempDir(), 'host-only');
      await fsp.writeFile(hostFile, 'FERRYSP1 a file of the host, not the job');

      // The job can write in its spool directory: it links its stdout spool to a file of the host.
      const submitted = await server.run(
        job(['sh', '-c', `echo mine; ln -sf ${hostFile} /ferry/io/stdout.spool; echo more`]),
      );
      const done = await waitDone(client, submitted.id);

      expect(done.state).toBe('FAILED');
      expect(done.reason).toMatch(/stdout\.spool is a symbolic link/);
      expect(await containersOf([done.id])).toEqual([]);
    });

    it('serves a running job’s log progressively with follow, and the pieces make the stored stdout', async () => {
      const { client } = server.ferry;
      const script = 'for i in 1 2 3 4 5; do echo line$i; sleep 0.6; done';

      const submitted = await server.run(job(['sh', '-c', script]));
      await waitFor(client, submitted.id, ['RUNNING']);
      const chunks = await followLog(client, submitted.id, 'stdout');

      const withData = chunks.filter((c) => c.data.length > 0);
      expect(withData.filter((c) => c.state === 'RUNNING').length).toBeGreaterThanOrEqual(2);
      for (const chunk of chunks) expect(chunk.nextOffset).toBe(chunk.offset + chunk.data.length);
      expect(chunks.at(-1)?.complete).toBe(true);
      const followed = Buffer.concat(chunks.map((c) => c.data));
      expect(followed.toString('latin1')).toBe('line1\nline2\nline3\nline4\nline5\n');
      expect(followed.equals(await stdoutOf(client, submitted.id))).toBe(true);
    });

    it('hides an execution from a caller with another token (404), and shows it to its owner', async () => {
      const owner = new FerryClient(server.ferry.url, 'owner-token-1111');
      const stranger = new FerryClient(server.ferry.url, 'stranger-token-2222');

      const submitted = await server.run(job(['echo', 'mine']), owner);
      await waitDone(owner, submitted.id);

      const base = `/v1/executions/${submitted.id}`;
      expect(await statusOf(stranger.json('GET', base))).toBe(404);
      expect(await statusOf(stranger.json('GET', `${base}/wait?timeoutSeconds=0`))).toBe(404);
      expect(await statusOf(stranger.bytes(`${base}/logs?stream=stdout`))).toBe(404);
      expect(await statusOf(stranger.json('GET', `${base}/result`))).toBe(404);
      expect(await statusOf(stranger.json('POST', `${base}/cancel`))).toBe(404);
      expect(await statusOf(stranger.json('POST', `${base}/result/reject`))).toBe(404);
      const strangersList = await stranger.json<{ items: Execution[] }>('GET', '/v1/executions');
      expect(strangersList.body.items.map((e) => e.id)).not.toContain(submitted.id);
      const notFound = await rawRequest(server.ferry.url, 'GET', base, 'stranger-token-2222');
      expect(notFound.contentType).toMatch(/^application\/problem\+json/);
      expect((await owner.json<Execution>('GET', base)).body.state).toBe('COMPLETED');
      expect((await stdoutOf(owner, submitted.id)).toString('latin1')).toBe('mine\n');
    });

    it('deletes the stored output when the result is rejected (logs then 409)', async () => {
      const { client } = server.ferry;
      const done = await waitDone(client, (await server.run(job(['echo', 'discard me']))).id);
      const { links } = await result(client, done.id);
      expect((await fetch(links.stdout)).status).toBe(200);

      const reviewed = await client.json<Execution>('POST', `/v1/executions/${done.id}/result/reject`);

      expect(reviewed.body.result?.review).toBe('REJECTED');
      expect((await client.json<Execution>('GET', `/v1/executions/${done.id}`)).body.result?.review).toBe(
        'REJECTED',
      );
      const logs = await rawRequest(server.ferry.url, 'GET', `/v1/executions/${done.id}/logs?stream=stdout`);
      expect(logs.status).toBe(409);
      expect(logs.contentType).toMatch(/^application\/problem\+json/);
      expect(await statusOf(client.json('GET', `/v1/executions/${done.id}/result`))).toBe(409);
      // The download link handed out before is still signed and unexpired, but the bytes are gone.
      expect((await fetch(links.stdout)).status).toBe(404);
      expect((await fetch(links.stderr)).status).toBe(404);
    });

    it('marks an accepted result ACCEPTED and keeps its output', async () => {
      const { client } = server.ferry;
      const done = await waitDone(client, (await server.run(job(['echo', 'keep me']))).id);

      const reviewed = await client.json<Execution>('POST', `/v1/executions/${done.id}/result/accept`);

      expect(reviewed.body.result?.review).toBe('ACCEPTED');
      expect((await result(client, done.id)).review).toBe('ACCEPTED');
      expect((await stdoutOf(client, done.id)).toString('latin1')).toBe('keep me\n');
      const again = await rawRequest(server.ferry.url, 'POST', `/v1/executions/${done.id}/result/reject`);
      expect(again.status).toBe(409);
    });
  });

  describe('output limits', () => {
    const server = serverFor({});
    // Odd, so that head+tail splits it unevenly: floor(limit/2) head bytes, the rest tail.
    const limit = MiB + 1;
    const inlineBytes = 64;
    /** Produced bytes stored: for head+tail, the most that fit in the limit beside their marker. */
    function keptOf(keep: (typeof keeps)[number], total: number): number {
      if (total <= limit || keep !== 'head+tail') return Math.min(total, limit);
      let kept = limit;
      while (kept + marker(total - kept).length > limit) kept -= 1;
      return kept;
    }
    const marker = (omitted: number) => Buffer.from(`\n[ferry: ${omitted} bytes omitted]\n`);
    const keeps = ['head', 'tail', 'head+tail'] as const;

    /**
     * What a job printing `total` bytes prints, and the command that prints it. Large outputs are
     * distinct numbers, then zeros, then other distinct numbers: every byte a limit can keep is
     * at a recognisable place, and the bulk costs the 2-core host little.
     */
    function producing(total: number): { command: string; bytes: (start: number, end: number) => Buffer } {
      const numbers = "tr '\\n' ' '";
      if (total <= 1.5 * MiB) {
        const whole = spacedNumbers(1, total);
        return {
          command: `seq 1 300000 | ${numbers} | head -c ${total}`,
          bytes: (start, end) => whole.subarray(start, end),
        };
      }
      const piece = 700_000;
      const first = spacedNumbers(1, piece);
      const last = spacedNumbers(1_000_000, piece);
      const zeros = total - 2 * piece;
      const pieces = [
        { at: 0, bytes: first },
        { at: piece, bytes: Buffer.alloc(zeros) },
        { at: total - piece, bytes: last },
      ];
      return {
        command:
          `seq 1 300000 | ${numbers} | head -c ${piece}; head -c ${zeros} /dev/zero; ` +
          `seq 1000000 1200000 | ${numbers} | head -c ${piece}`,
        bytes: (start, end) =>
          Buffer.concat(
            pieces.map(({ at, bytes }) =>
              bytes.subarray(Math.max(0, start - at), Math.max(0, Math.min(bytes.length, end - at))),
            ),
          ),
      };
    }

    function expectedStored(keep: (typeof keeps)[number], total: number): Buffer {
      const { bytes } = producing(total);
      if (total <= limit) return bytes(0, total);
      if (keep === 'head') return bytes(0, limit);
      if (keep === 'tail') return bytes(total - limit, total);
      // The marker counts inside the limit: the kept bytes make room for it, half on each side.
      const kept = keptOf(keep, total);
      return Buffer.concat([
        bytes(0, Math.floor(kept / 2)),
        marker(total - kept),
        bytes(total - (kept - Math.floor(kept / 2)), total),
      ]);
    }

    function expectedInline(keep: (typeof keeps)[number], total: number): string {
      const { bytes } = producing(total);
      if (keep === 'head') return bytes(0, inlineBytes).toString('latin1');
      if (keep === 'tail') return bytes(total - inlineBytes, total).toString('latin1');
      const half = inlineBytes / 2;
      return Buffer.concat([
        bytes(0, half),
        marker(total - inlineBytes),
        bytes(total - half, total),
      ]).toString('latin1');
    }

    describe.each(keeps)('keeping %s', (keep) => {
      it.each([
        { size: 'exactly at the limit', total: limit },
        { size: 'one byte past the limit', total: limit + 1 },
        { size: '100 MiB, far past the limit', total: 100 * MiB },
      ])(
        'stores output $size exactly as the rules say',
        async ({ total }) => {
          const { client } = server.ferry;
          const spec = job(['sh', '-c', producing(total).command], {
            resources: { cpu: 1, memory: 64 },
            outputLimits: { stdoutBytes: limit, inlineBytes, keep },
          });

          const done = await waitDone(client, (await server.run(spec)).id);

          expect(done.state).toBe('COMPLETED');
          expect(done.exitCode).toBe(0);
          const stored = await stdoutOf(client, done.id);
          const expected = expectedStored(keep, total);
          expect(stored.length).toBe(expected.length);
          // Compared by slices first so that a failure shows where the bytes differ, not 1 MiB of diff.
          expect(stored.subarray(0, 256).toString('latin1')).toBe(
            expected.subarray(0, 256).toString('latin1'),
          );
          expect(stored.subarray(-256).toString('latin1')).toBe(expected.subarray(-256).toString('latin1'));
          expect(stored.equals(expected)).toBe(true);

          const truncated = total > limit;
          const { manifest } = await result(client, done.id);
          expect(manifest.keep).toBe(keep);
          expect(manifest.stdout).toMatchObject({
            totalBytes: total,
            storedBytes: expected.length,
            truncated,
            omittedBytes: total - keptOf(keep, total),
            inline: expectedInline(keep, total),
            inlineEncoding: 'utf8',
            inlineTruncated: true,
          });
          expect(stored.length).toBeLessThanOrEqual(limit);
          expect(manifest.stdout.headBytes + manifest.stdout.tailBytes).toBe(keptOf(keep, total));
          if (truncated) {
            const headShare = Math.floor(keptOf(keep, total) / 2);
            expect(manifest.stdout.headBytes).toBe({ head: limit, tail: 0, 'head+tail': headShare }[keep]);
          }
          expect(done.result?.stdout).toEqual({ totalBytes: total, storedBytes: expected.length, truncated });
          expect(await containersOf([done.id])).toEqual([]);
        },
        90_000,
      );
    });

    it.each(keeps)(
      'stores exactly 1,024 bytes of 100 KB under a 1,024-byte limit, marker included (%s)',
      async (keep) => {
        const { client } = server.ferry;
        const total = 100 * 1024;
        const spec = job(['sh', '-c', `seq 1 30000 | tr '\\n' ' ' | head -c ${total}`], {
          outputLimits: { stdoutBytes: 1024, keep },
        });

        const done = await waitDone(client, (await server.run(spec)).id);

        expect(done.state).toBe('COMPLETED');
        const stored = await stdoutOf(client, done.id);
        expect(stored.length).toBe(1024);
        const { manifest } = await result(client, done.id);
        expect(manifest.stdout).toMatchObject({ totalBytes: total, storedBytes: 1024, truncated: true });
        expect(done.result?.stdout).toEqual({ totalBytes: total, storedBytes: 1024, truncated: true });
        if (keep === 'head+tail')
          expect(stored.toString('latin1')).toMatch(/\n\[ferry: \d+ bytes omitted\]\n/);
      },
    );
  });

  describe('timeouts and cancellation, one job at a time', () => {
    const server = serverFor({ FERRY_MAX_CONCURRENCY: '1' });

    it('stops a job at its timeout: TIMED_OUT, and the container is gone', async () => {
      const { client } = server.ferry;
      const started = Date.now();

      const submitted = await server.run(job(['sleep', '60'], { timeoutSeconds: 2 }));
      const done = await waitDone(client, submitted.id, 30);

      expect(done.state).toBe('TIMED_OUT');
      expect(done.reason).toMatch(/timeout of 2s/);
      expect(Date.now() - started).toBeLessThan(20_000);
      expect(endedAt(done) - enteredAt(done, 'RUNNING')).toBeGreaterThanOrEqual(2_000);
      // Enforced at the deadline, not at the next sweep: within 1 s of it.
      const overshoot = runTime(done) - 2_000;
      console.info(`sleep 60 with a 2 s timeout ended ${overshoot} ms past its deadline`);
      expect(overshoot).toBeGreaterThanOrEqual(0);
      expect(overshoot).toBeLessThanOrEqual(1_000);
      expect(await containersOf([done.id])).toEqual([]);
    }, 40_000);

    it('times out a fork bomb within 6 s of its start, and frees its slot only once the container is gone', async () => {
      const { client } = server.ferry;
      // Each call forks two more in the background until the container's pid limit is reached.
      const bomb = await server.run(
        job(['sh', '-c', 'b(){ b|b& }; b; exec sleep 300'], {
          timeoutSeconds: 5,
          resources: { cpu: 1, memory: 512 },
        }),
      );
      await waitFor(client, bomb.id, ['RUNNING']);
      const behind = await server.run(job(['echo', 'next']));
      const engine: { at: number; present: boolean }[] = [];
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const at = Date.now();
          engine.push({ at, present: (await containersOf([bomb.id])).length > 0 });
          await sleep(50);
        }
      })();

      const done = await waitDone(client, bomb.id, 60);
      const next = await waitDone(client, behind.id, 60);
      sampling = false;
      await sampler;

      expect(done.state).toBe('TIMED_OUT');
      console.info(`a fork bomb with a 5 s timeout ended ${runTime(done)} ms after its start`);
      expect(runTime(done)).toBeLessThanOrEqual(6_000);
      // It did reach the pid limit: forks were refused.
      expect((await stdoutOf(client, bomb.id, 'stderr')).toString()).toMatch(/can't fork/);
      expect(next.state).toBe('COMPLETED');
      const launchedAt = enteredAt(next, 'LAUNCHING');
      expect(launchedAt).toBeGreaterThanOrEqual(endedAt(done));
      // Every look at the engine taken after the next job launched saw no container of the bomb.
      expect(engine.filter((s) => s.at >= launchedAt && s.present)).toEqual([]);
      expect(await containersOf([bomb.id])).toEqual([]);
    }, 90_000);

    it('cancels a queued job at once, and it never launches', async () => {
      const { client } = server.ferry;
      const blocker = await server.run(job(['sleep', '30']));
      await waitFor(client, blocker.id, ['RUNNING']);
      const queued = await server.run(job(['echo', 'never']));
      expect((await client.json<Execution>('GET', `/v1/executions/${queued.id}`)).body.state).toBe('QUEUED');

      const cancelled = await client.json<Execution>('POST', `/v1/executions/${queued.id}/cancel`);

      expect(cancelled.status).toBe(202);
      expect(cancelled.body.state).toBe('CANCELLED');
      // Free the only slot, give the dispatcher time to pick up what is queued, and look again.
      await client.json('POST', `/v1/executions/${blocker.id}/cancel`);
      await waitDone(client, blocker.id, 30);
      await sleep(1_500);
      const after = (await client.json<Execution>('GET', `/v1/executions/${queued.id}`)).body;
      expect(after.state).toBe('CANCELLED');
      expect(after.history.map((h) => h.state)).toEqual(['OFFERED', 'QUEUED', 'CANCELLED']);
      expect(after.task).toBeUndefined();
      expect(await containersOf([queued.id, blocker.id])).toEqual([]);
    }, 60_000);

    it('cancels a running job: CANCELLED, output so far kept, and the container is gone', async () => {
      const { client } = server.ferry;
      const submitted = await server.run(job(['sh', '-c', 'echo started; sleep 30']));
      await waitFor(client, submitted.id, ['RUNNING']);
      await expect
        .poll(async () => (await stdoutOf(client, submitted.id)).toString('latin1'))
        .toBe('started\n');

      const cancelled = await client.json<Execution>('POST', `/v1/executions/${submitted.id}/cancel`);
      const done = await waitDone(client, submitted.id, 30);

      expect(cancelled.status).toBe(202);
      expect(done.state).toBe('CANCELLED');
      expect(endedAt(done) - enteredAt(done, 'RUNNING')).toBeLessThan(15_000);
      expect((await stdoutOf(client, done.id)).toString('latin1')).toBe('started\n');
      expect((await result(client, done.id)).manifest.partial).toBe(true);
      expect(await containersOf([done.id])).toEqual([]);
    }, 60_000);

    it('refuses to cancel a finished job with 409 problem+json, and leaves it as it was', async () => {
      const { client } = server.ferry;
      const done = await waitDone(client, (await server.run(job(['true']))).id);

      const reply = await rawRequest(server.ferry.url, 'POST', `/v1/executions/${done.id}/cancel`);

      expect(reply.status).toBe(409);
      expect(reply.contentType).toMatch(/^application\/problem\+json/);
      expect(reply.body).toMatchObject({ status: 409, title: 'Conflict' });
      expect(String(reply.body.detail)).toMatch(/COMPLETED/);
      expect((await client.json<Execution>('GET', `/v1/executions/${done.id}`)).body.state).toBe('COMPLETED');
    });
  });

  describe('at most two jobs at once', () => {
    const server = serverFor({ FERRY_MAX_CONCURRENCY: '2' });

    it('runs 10 jobs never more than 2 at a time, by their histories and by the engine', async () => {
      const { client } = server.ferry;
      const ids: string[] = [];
      const sampler = sampleContainers(() => ids);

      let done: Execution[];
      let samples: number[];
      try {
        for (let i = 0; i < 10; i++) ids.push((await server.run(job(['sleep', '1']))).id);
        done = await Promise.all(ids.map((id) => waitDone(client, id, 90)));
      } finally {
        samples = await sampler.stop();
      }

      expect(done.map((e) => e.state)).toEqual(Array(10).fill('COMPLETED'));
      expect(done.map((e) => e.exitCode)).toEqual(Array(10).fill(0));
      const intervals = done.map((e) => ({ start: enteredAt(e, 'LAUNCHING'), end: endedAt(e) }));
      expect(maxOverlap(intervals)).toBe(2);
      expect(Math.max(...samples)).toBe(2);
      expect(await containersOf(ids)).toEqual([]);
    }, 120_000);
  });

  describe('a big job among a stream of small ones', () => {
    const starvationSeconds = 2;
    const server = serverFor({
      FERRY_MAX_CONCURRENCY: '16',
      FERRY_MAX_CPU: '2',
      FERRY_STARVATION_SECONDS: String(starvationSeconds),
    });

    it('is not starved: it starts within the bound while small jobs keep coming', async () => {
      const { client } = server.ferry;
      const small = job(['sleep', '1'], { resources: { cpu: 0.5, memory: 64 }, labels: { size: 'small' } });
      const big = job(['sleep', '1'], { resources: { cpu: 2, memory: 64 }, labels: { size: 'big' } });
      const smallIds: string[] = [];
      const unfinished = async () =>
        (
          await client.json<{ items: Execution[] }>(
            'GET',
            '/v1/executions?state=QUEUED&state=LAUNCHING&state=RUNNING&limit=100',
          )
        ).body.items.filter((e) => e.spec.labels.size === 'small').length;
      // Keeps more small jobs waiting than fit, so a slot that frees is always wanted by one.
      let streaming = true;
      const stream = (async () => {
        while (streaming) {
          for (let missing = 7 - (await unfinished()); missing > 0 && streaming; missing--) {
            smallIds.push((await server.run(small)).id);
          }
          await sleep(200);
        }
      })();
      let bigDone: Execution;
      try {
        await sleep(3_000);
        const bigId = (await server.run(big)).id;
        bigDone = await waitDone(client, bigId, 30);
      } finally {
        streaming = false;
        await stream;
      }
      const smallDone = await Promise.all(smallIds.map((id) => waitDone(client, id, 60)));

      expect(bigDone.state).toBe('COMPLETED');
      expect(smallDone.map((e) => e.state)).toEqual(smallIds.map(() => 'COMPLETED'));
      const ran = smallDone.filter((e) => e.history.some((h) => h.state === 'LAUNCHING'));
      const queuedAt = Date.parse(bigDone.queuedAt ?? '');
      const bigLaunched = enteredAt(bigDone, 'LAUNCHING');
      const starvedFrom = queuedAt + starvationSeconds * 1000;
      // Small jobs kept coming and running all along, so the big one really had to compete.
      expect(ran.some((e) => enteredAt(e, 'LAUNCHING') < queuedAt)).toBe(true);
      expect(
        ran.some((e) => enteredAt(e, 'LAUNCHING') > queuedAt && enteredAt(e, 'LAUNCHING') < starvedFrom),
      ).toBe(true);
      expect(
        smallDone.some((e) => Date.parse(e.createdAt) > queuedAt && Date.parse(e.createdAt) < bigLaunched),
      ).toBe(true);
      expect(ran.some((e) => enteredAt(e, 'LAUNCHING') > endedAt(bigDone))).toBe(true);
      // Once it had waited past the bound, no small job queued after it took capacity before it.
      // Small jobs queued before it are ahead in line: they may still start first.
      const queuedBefore = (e: Execution) => Date.parse(e.queuedAt ?? '') < queuedAt;
      const launchedAt = (e: Execution) => enteredAt(e, 'LAUNCHING');
      const cutIn = ran.filter(
        (e) => !queuedBefore(e) && launchedAt(e) >= starvedFrom && launchedAt(e) < bigLaunched,
      );
      expect(cutIn.map((e) => e.id)).toEqual([]);
      // So it starts at the latest once the jobs ahead of it, and those running, have ended
      // (plus a second for the dispatcher to look again, and a little more).
      const longestSmall = Math.max(...ran.map((e) => endedAt(e) - launchedAt(e)));
      const lastAhead = Math.max(starvedFrom, ...ran.filter(queuedBefore).map(launchedAt));
      expect(bigLaunched).toBeLessThanOrEqual(lastAhead + longestSmall + 2_000);
      expect(await containersOf([bigDone.id, ...smallIds])).toEqual([]);
    }, 90_000);
  });
});
