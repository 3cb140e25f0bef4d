// Jobs with several steps on the local backends: each step its own container (or process), one
// after another, sharing the job's volumes and outputs, with one stdout and stderr that follow on
// from step to step, and a record of how each step ended. A timeout or a cancel stops the step
// running and the rest never start; a crash of the server mid-step loses nothing.
import fsp from 'node:fs/promises';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import type { Execution, ResultManifest } from '../../shared/domain/execution.ts';
import type { ResultView } from '../../shared/use-cases/results.ts';
import { containersOf, removeContainersOf } from '../support/docker.ts';
import {
  type ServerProcess,
  spawnServer,
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
  throw new Error('CI=true but no Docker Engine is available: the steps suite must run');
}

const small = { cpu: 0.25, memory: 64 };
const manifestOf = async (client: TestServer['client'], id: string): Promise<ResultManifest> =>
  (await client.json<ResultView>('GET', `/v1/executions/${id}/result`)).body.manifest;

const sharing = {
  resources: small,
  volumes: ['/work'],
  outputs: [{ path: '/work/final.txt' }],
  steps: [
    { image, command: ['sh', '-c', 'echo one; echo made-by-one > /work/note.txt; echo err-one >&2'] },
    { image, command: ['sh', '-c', 'echo two read $(cat /work/note.txt); exit 7'], ignoreError: true },
    { image, command: ['sh', '-c', 'echo three; cp /work/note.txt /work/final.txt'], workdir: '/tmp/w' },
  ],
};

describe.skipIf(!dockerAvailable).each(['wrapper', 'attach'])(
  'a job with steps on the Docker backend (%s capture)',
  (capture) => {
    let server: TestServer;
    const ids: string[] = [];
    afterAll(async () => {
      await server?.close();
      await removeContainersOf(ids);
      if (server !== undefined) await fsp.rm(server.dataDir, { recursive: true, force: true });
    });

    it('runs its steps in order, sharing a volume, with one output and a record of each step', async () => {
      server = await startServer({ FERRY_BACKEND: 'docker', FERRY_DOCKER_CAPTURE: capture });
      const execution = await submit(server.client, sharing);
      ids.push(execution.id);
      expect(execution.spec.steps).toHaveLength(3);
      expect(execution.spec.image).toBe(image);
      const done = await waitDone(server.client, execution.id, 90);
      // The second step failed, but ignores it: the job's exit code is 0.
      expect(done).toMatchObject({ state: 'COMPLETED', exitCode: 0 });
      const stdout = 'one\ntwo read made-by-one\nthree\n';
      expect((await stdoutOf(server.client, execution.id)).toString()).toBe(stdout);
      expect((await stdoutOf(server.client, execution.id, 'stderr')).toString()).toBe('err-one\n');
      const manifest = await manifestOf(server.client, execution.id);
      expect(manifest.steps?.map((s) => [s.exitCode, s.stdoutFrom, s.stderrFrom])).toEqual([
        [0, 0, 0],
        [7, 4, 8],
        [0, stdout.indexOf('three'), 8],
      ]);
      const [first, second] = manifest.steps ?? [];
      expect(Date.parse(second?.startedAt ?? '')).toBeGreaterThanOrEqual(Date.parse(first?.endedAt ?? ''));
      // The output the last step wrote in the shared volume was collected.
      expect(manifest.outputs).toEqual([
        expect.objectContaining({ name: 'final.txt', bytes: 'made-by-one\n'.length }),
      ]);
      expect(await containersOf([execution.id])).toEqual([]);
    }, 120_000);

    it('ends at the first failing step, and stops the step running on a timeout or a cancel', async () => {
      const failing = await submit(server.client, {
        resources: small,
        steps: [
          { image, command: ['sh', '-c', 'echo first; exit 3'] },
          { image, command: ['sh', '-c', 'echo never'] },
        ],
      });
      const timing = await submit(server.client, {
        resources: small,
        timeoutSeconds: 3,
        steps: [
          { image, command: ['sleep', '1'] },
          { image, command: ['sh', '-c', 'echo second; sleep 30'] },
          { image, command: ['sh', '-c', 'echo never'] },
        ],
      });
      const cancelled = await submit(server.client, {
        resources: small,
        steps: [
          { image, command: ['true'] },
          { image, command: ['sh', '-c', 'echo waiting; sleep 30'] },
          { image, command: ['sh', '-c', 'echo never'] },
        ],
      });
      ids.push(failing.id, timing.id, cancelled.id);
      await expect
        .poll(async () => (await stdoutOf(server.client, cancelled.id)).toString(), { timeout: 30_000 })
        .toBe('waiting\n');
      await server.client.json('POST', `/v1/executions/${cancelled.id}/cancel`);

      expect(await waitDone(server.client, failing.id, 60)).toMatchObject({
        state: 'COMPLETED',
        exitCode: 3,
      });
      expect((await stdoutOf(server.client, failing.id)).toString()).toBe('first\n');
      expect((await manifestOf(server.client, failing.id)).steps).toHaveLength(1);

      const timedOut = await waitDone(server.client, timing.id, 60);
      expect(timedOut.state).toBe('TIMED_OUT');
      // The timeout counts from the job's start, not the step's.
      expect(Date.parse(timedOut.endedAt ?? '') - Date.parse(timedOut.startedAt ?? '')).toBeLessThan(6_000);
      const timedSteps = (await manifestOf(server.client, timing.id)).steps ?? [];
      // The wrapper passes SIGTERM on; without it the shell is PID 1, ignores it, and is killed.
      expect(timedSteps.map((s) => s.exitCode)).toEqual([0, capture === 'wrapper' ? 143 : 137]);

      const stopped = await waitDone(server.client, cancelled.id, 60);
      expect(stopped.state).toBe('CANCELLED');
      expect((await stdoutOf(server.client, cancelled.id)).toString()).toBe('waiting\n');
      expect((await manifestOf(server.client, cancelled.id)).steps).toHaveLength(2);
      expect(await containersOf([failing.id, timing.id, cancelled.id])).toEqual([]);
    }, 120_000);
  },
);

describe.skipIf(!dockerAvailable)('a job with steps through a crash of the server', () => {
  const servers: ServerProcess[] = [];
  const ids: string[] = [];
  let dataDir = '';
  afterEach(async () => {
    for (const server of servers.splice(0)) {
      if (server.child.exitCode === null && server.child.signalCode === null) await server.kill('SIGTERM');
    }
    await removeContainersOf(ids.splice(0));
    if (dataDir !== '') await fsp.rm(dataDir, { recursive: true, force: true });
  });

  it('goes on with the next step after a new server adopts the step that was running', async () => {
    dataDir = await tempDir();
    const env = { FERRY_DATA_DIR: dataDir, FERRY_BACKEND: 'docker', FERRY_SWEEP_INTERVAL_SECONDS: '0.5' };
    const first = await spawnServer(env);
    servers.push(first);
    const execution = await submit(first.client, {
      resources: small,
      steps: [
        { image, command: ['echo', 'one'] },
        { image, command: ['sh', '-c', 'echo two; sleep 4; echo three; exit 2'], ignoreError: true },
        { image, command: ['echo', 'four'] },
      ],
    });
    ids.push(execution.id);
    await waitFor(first.client, execution.id, ['RUNNING']);
    await expect
      .poll(async () => (await stdoutOf(first.client, execution.id)).toString(), { timeout: 30_000 })
      .toBe('one\ntwo\n');
    await first.kill('SIGKILL');

    const second = await spawnServer(env);
    servers.push(second);
    const done = await waitDone(second.client, execution.id, 60);
    expect(done).toMatchObject({ state: 'COMPLETED', exitCode: 0 });
    expect((await stdoutOf(second.client, execution.id)).toString()).toBe('one\ntwo\nthree\nfour\n');
    const manifest = (await second.client.json<ResultView>('GET', `/v1/executions/${execution.id}/result`))
      .body.manifest;
    expect(manifest.steps?.map((s) => [s.exitCode, s.stdoutFrom])).toEqual([
      [0, 0],
      [2, 4],
      [0, 'one\ntwo\nthree\n'.length],
    ]);
    expect(manifest.partial).toBe(false);
  }, 120_000);
});

describe('a job with steps on the process backend', () => {
  let server: TestServer;
  afterAll(async () => {
    await server?.close();
    if (server !== undefined) await fsp.rm(server.dataDir, { recursive: true, force: true });
  });

  it('runs each step as a process in the job’s directory; a step that cannot start fails with 127', async () => {
    server = await startServer({ FERRY_BACKEND: 'process' });
    const execution = await submit(server.client, {
      volumes: ['/shared'],
      steps: [
        { image, command: ['sh', '-c', 'echo one > "$FERRY_ROOT/shared/a"; echo first'] },
        { image, command: ['sh', '-c', 'cat a; pwd | grep -c shared'], workdir: '/shared' },
        { image, command: ['no-such-program-anywhere'], ignoreError: true },
        { image, command: ['sh', '-c', 'echo after; sleep 1; echo last'] },
        { image, command: ['not-here-either'] },
        { image, command: ['echo', 'never'] },
      ],
    });
    const done: Execution = await waitDone(server.client, execution.id, 60);
    expect(done).toMatchObject({ state: 'COMPLETED', exitCode: 127 });
    // The step after an ignored one that could not start ran whole (nothing of the failed one
    // touched it), and the next that could not start ended the job.
    expect((await stdoutOf(server.client, execution.id)).toString()).toBe('first\none\n1\nafter\nlast\n');
    expect((await stdoutOf(server.client, execution.id, 'stderr')).toString()).toBe(
      'ferry: program not found: no-such-program-anywhere\nferry: program not found: not-here-either\n',
    );
    const manifest = await manifestOf(server.client, execution.id);
    expect(manifest.steps?.map((s) => s.exitCode)).toEqual([0, 0, 127, 0, 127]);
    expect(manifest.steps?.[2]?.startError).toBe('program not found: no-such-program-anywhere');
  }, 60_000);
});
