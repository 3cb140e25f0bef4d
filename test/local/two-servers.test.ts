// Several Ferry servers may share one Docker Engine (a `ferry serve` beside a test run, two
// users on one host). Each owns only the containers it made: a server that starts, recovers,
// crashes and starts again beside another must never adopt, stop or remove the other's jobs.
import fsp from 'node:fs/promises';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { Execution } from '../../shared/domain/execution.ts';
import { containersOf, removeContainersOf } from '../support/docker.ts';
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
  throw new Error('CI=true but no Docker Engine is available: the two-server suite must run');
}

describe.skipIf(!dockerAvailable)('two servers on one Docker Engine', () => {
  const servers: ServerProcess[] = [];
  const submitted: string[] = [];
  const dirs: string[] = [];

  async function serve(dataDir: string): Promise<ServerProcess> {
    const server = await spawnServer({
      FERRY_DATA_DIR: dataDir,
      FERRY_BACKEND: 'docker',
      FERRY_MAX_CONCURRENCY: '4',
      FERRY_SWEEP_INTERVAL_SECONDS: '0.5',
    });
    servers.push(server);
    return server;
  }

  afterEach(async () => {
    for (const server of servers.splice(0)) {
      if (server.child.exitCode === null && server.child.signalCode === null) await server.kill('SIGTERM');
    }
    await removeContainersOf(submitted.splice(0));
    for (const dir of dirs.splice(0)) await fsp.rm(dir, { recursive: true, force: true });
  });

  it("never touches the other's jobs while one is killed and restarted again and again", async () => {
    const [dirA, dirB] = [await tempDir(), await tempDir()];
    dirs.push(dirA, dirB);
    const steady = await serve(dirA);
    const jobs: Execution[] = [];
    for (let i = 0; i < 4; i++) {
      const execution = await submit(steady.client, {
        image,
        command: ['sh', '-c', `echo start-${i}; sleep 6; echo end-${i}`],
        resources: { cpu: 0.25, memory: 64 },
      });
      submitted.push(execution.id);
      jobs.push(execution);
    }
    for (const execution of jobs) await waitFor(steady.client, execution.id, ['RUNNING']);

    // The other server comes and goes: each start recovers its own data directory, and it
    // runs a job of its own each time, which a later start finds and must handle.
    let restless = await serve(dirB);
    for (let round = 0; round < 4; round++) {
      const own = await submit(restless.client, {
        image,
        command: ['sleep', '600'],
        resources: { cpu: 0.25, memory: 64 },
      });
      submitted.push(own.id);
      await waitFor(restless.client, own.id, ['RUNNING']);
      await restless.kill(round % 2 === 0 ? 'SIGKILL' : 'SIGTERM');
      restless = await serve(dirB);
    }

    for (const [i, execution] of jobs.entries()) {
      const done = await waitDone(steady.client, execution.id, 60);
      expect(done.state).toBe('COMPLETED');
      expect(done.exitCode).toBe(0);
      expect((await stdoutOf(steady.client, execution.id)).toString('latin1')).toBe(`start-${i}\nend-${i}\n`);
    }
    // The restarted server still owns its jobs: they run on, adopted, not orphaned.
    const ownJobs = submitted.filter((id) => !jobs.some((j) => j.id === id));
    expect((await containersOf(ownJobs)).map((c) => c.State)).toEqual(ownJobs.map(() => 'running'));
    for (const id of ownJobs) {
      expect((await restless.client.json<Execution>('GET', `/v1/executions/${id}`)).body.state).toBe(
        'RUNNING',
      );
    }
  }, 120_000);
});
