// A crash of the local server must not lose work: `ferry serve` is killed with SIGKILL while a
// container runs and another job waits, and a new server on the same data directory finishes both.
import fsp from 'node:fs/promises';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { Execution } from '../../shared/domain/execution.ts';
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

  async function serve(dataDir: string): Promise<ServerProcess> {
    const server = await spawnServer({
      FERRY_DATA_DIR: dataDir,
      FERRY_BACKEND: 'docker',
      FERRY_MAX_CONCURRENCY: '1',
      FERRY_SWEEP_INTERVAL_SECONDS: '0.5',
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

  it('loses nothing when killed mid-run: the running and the queued job both complete in full', async () => {
    const dataDir = await tempDir();
    dirs.push(dataDir);
    const first = await serve(dataDir);
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
    const second = await serve(dataDir);
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
