// A crash of the local server must not lose work: `ferry serve` is killed with SIGKILL while a
// container runs and another job waits, and a new server on the same data directory finishes both.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { Execution } from '../../shared/domain/execution.ts';
import type { ResultView } from '../../shared/use-cases/results.ts';
import { containersOf, docker, removeContainersOf } from '../support/docker.ts';
import {
  type ServerProcess,
  spawnServer,
  stdoutOf,
  submit,
  tempDir,
  waitDone,
  waitFor,
} from '../support/server.ts';

const dockerAvailable = inject('dockerAvailable');
const image = inject('testImage');
if (!dockerAvailable && process.env.CI === 'true') {
  throw new Error('CI=true but no Docker Engine is available: the restart suite must run');
}

const job = (command: string[]) => ({ image, command, resources: { cpu: 0.25, memory: 64 } });

describe.skipIf(!dockerAvailable)('a restart of the local server', () => {
  const servers: ServerProcess[] = [];
  const submitted: string[] = [];
  const dirs: string[] = [];

  async function serve(dataDir: string, env: Record<string, string> = {}): Promise<ServerProcess> {
    const server = await spawnServer({
      FERRY_DATA_DIR: dataDir,
      FERRY_BACKEND: 'docker',
      FERRY_MAX_CONCURRENCY: '1',
      FERRY_SWEEP_INTERVAL_SECONDS: '0.5',
      ...env,
    });
    servers.push(server);
    return server;
  }

  async function run(server: ServerProcess, command: string[]): Promise<Execution> {
    const execution = await submit(server.client, job(command));
    submitted.push(execution.id);
    return execution;
  }

  afterEach(async () => {
    for (const server of servers.splice(0)) {
      // ServerProcess.kill waits for an exit that has already happened if a signal ended the child.
      if (server.child.exitCode === null && server.child.signalCode === null) await server.kill('SIGTERM');
    }
    await removeContainersOf(submitted.splice(0));
    for (const dir of dirs.splice(0)) await fsp.rm(dir, { recursive: true, force: true });
  });

  // The engine's journal is the capture where no wrapper can be built: it must hold up too.
  it.each(['wrapper', 'journal'])(
    'loses nothing when killed mid-run (%s capture): the running and the queued job both complete in full',
    async (capture) => {
      const dataDir = await tempDir();
      dirs.push(dataDir);
      const first = await serve(dataDir, { FERRY_DOCKER_CAPTURE: capture });
      const running = await run(first, ['sh', '-c', 'echo before; sleep 4; echo after']);
      await waitFor(first.client, running.id, ['RUNNING']);
      await expect
        .poll(async () => (await stdoutOf(first.client, running.id)).toString('latin1'))
        .toBe('before\n');
      const queued = await run(first, ['echo', 'second']);
      expect((await first.client.json<Execution>('GET', `/v1/executions/${queued.id}`)).body.state).toBe(
        'QUEUED',
      );

      await first.kill('SIGKILL');
      const orphans = await containersOf([running.id]);
      const second = await serve(dataDir, { FERRY_DOCKER_CAPTURE: capture });
      const ranThrough = await waitDone(second.client, running.id, 60);
      const waited = await waitDone(second.client, queued.id, 60);

      expect(orphans.map((c) => c.State)).toEqual(['running']);
      expect(second.url).not.toBe(first.url);
      expect(ranThrough.state).toBe('COMPLETED');
      expect(ranThrough.exitCode).toBe(0);
      expect((await stdoutOf(second.client, running.id)).toString('latin1')).toBe('before\nafter\n');
      expect(waited.state).toBe('COMPLETED');
      expect(waited.exitCode).toBe(0);
      expect((await stdoutOf(second.client, queued.id)).toString('latin1')).toBe('second\n');
      // One at a time still holds across the restart: the queued job started after the first ended.
      const launched = waited.history.find((h) => h.state === 'LAUNCHING');
      expect(Date.parse(launched?.at ?? '')).toBeGreaterThanOrEqual(Date.parse(ranThrough.endedAt ?? ''));
      expect(await containersOf([running.id, queued.id])).toEqual([]);
    },
    90_000,
  );

  it('keeps every byte a job prints through a crash, and `ferry logs -f` resumes across it', async () => {
    const dataDir = await tempDir();
    dirs.push(dataDir);
    const first = await serve(dataDir);
    const port = new URL(first.url).port;
    // About six seconds of output in bursts of a thousand lines: the crash falls in the middle.
    const bursts = 60;
    const script = `for i in $(seq 0 ${bursts - 1}); do seq $((i*1000)) $((i*1000+999)); sleep 0.1; done`;
    const expected = Buffer.from(
      Array.from({ length: bursts * 1000 }, (_, n) => `${n}\n`).join(''),
      'latin1',
    );
    const printing = await run(first, ['sh', '-c', script]);
    await waitFor(first.client, printing.id, ['RUNNING']);
    const follower = spawn(process.execPath, [path.resolve('bin/ferry.js'), 'logs', printing.id, '-f'], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, FERRY_URL: first.url },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const followed: Buffer[] = [];
    let notices = '';
    follower.stdout.on('data', (chunk: Buffer) => followed.push(chunk));
    follower.stderr.on('data', (chunk: Buffer) => {
      notices += chunk.toString();
    });
    const closed = once(follower, 'close');
    await expect.poll(() => Buffer.concat(followed).length, { timeout: 20_000 }).toBeGreaterThan(30_000);

    await first.kill('SIGKILL');
    const printedAtCrash = Buffer.concat(followed).length;
    const second = await serve(dataDir, { FERRY_PORT: port });
    const done = await waitDone(second.client, printing.id, 60);
    const [code] = (await closed) as [number | null];

    expect(printedAtCrash).toBeLessThan(expected.length);
    expect(done.state).toBe('COMPLETED');
    expect(done.exitCode).toBe(0);
    // The wrapper kept the output while no server was there: nothing is missing, nothing is partial.
    const result = await second.client.json<ResultView>('GET', `/v1/executions/${printing.id}/result`);
    expect(result.body.manifest.partial).toBe(false);
    expect(done.result?.stdout.totalBytes).toBe(expected.length);
    expect((await stdoutOf(second.client, printing.id)).equals(expected)).toBe(true);
    expect(code).toBe(0);
    expect(notices).toMatch(/the server is not answering; following again from byte \d+/);
    expect(notices).toMatch(/the server is back; following from byte \d+/);
    expect(Buffer.concat(followed).equals(expected)).toBe(true);
  }, 90_000);

  it('collects a job that ended while no server was running', async () => {
    const dataDir = await tempDir();
    dirs.push(dataDir);
    const first = await serve(dataDir);
    const execution = await run(first, ['sh', '-c', 'echo before; sleep 1; echo after; exit 3']);
    await waitFor(first.client, execution.id, ['RUNNING']);

    await first.kill('SIGKILL');
    const [orphan] = await containersOf([execution.id]);
    await expect
      .poll(async () => (await docker.getContainer(orphan?.Id ?? '').inspect()).State.Status, {
        timeout: 15_000,
      })
      .toBe('exited');
    const second = await serve(dataDir);
    const done = await waitDone(second.client, execution.id, 60);

    expect(done.state).toBe('COMPLETED');
    expect(done.exitCode).toBe(3);
    expect((await stdoutOf(second.client, execution.id)).toString('latin1')).toBe('before\nafter\n');
    expect(await containersOf([execution.id])).toEqual([]);
  }, 90_000);
});
