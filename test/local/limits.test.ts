// Limits that hold, seen from outside: a job's timeout is enforced when it falls due, a result
// that cannot be stored ends the job FAILED and its logs say so, and jobs of a server killed
// with SIGKILL do not outlive it. Plain processes, so this runs where there is no Docker.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { groupMembers, procStat } from '../../shared/adapters/local/process-records.ts';
import {
  runTime,
  type ServerProcess,
  spawnServer,
  startServer,
  submit,
  type TestServer,
  tempDir,
  waitDone,
  waitFor,
} from '../support/server.ts';

const job = (command: string[], extra: Record<string, unknown> = {}) => ({
  image: 'unused',
  command,
  ...extra,
});

describe('one server with the process backend', () => {
  let ferry: TestServer;

  beforeAll(async () => {
    // The default sweep interval: the sweeper is only the backstop for deadlines.
    ferry = await startServer({ FERRY_BACKEND: 'process', FERRY_SWEEP_INTERVAL_SECONDS: '1' });
  });

  afterAll(async () => {
    await ferry?.close();
    if (ferry !== undefined) await fsp.rm(ferry.dataDir, { recursive: true, force: true });
  });

  it.each([
    { what: 'sleep 30', command: ['sleep', '30'] },
    { what: 'sleep 30 ignoring SIGTERM', command: ['sh', '-c', 'trap "" TERM; sleep 30'] },
  ])(
    'times out $what within 1 s of its 2 s deadline',
    async ({ command }) => {
      const submitted = await submit(ferry.client, job(command, { timeoutSeconds: 2 }));

      const done = await waitDone(ferry.client, submitted.id, 30);

      expect(done.state).toBe('TIMED_OUT');
      expect(done.reason).toMatch(/timeout of 2s/);
      const overshoot = runTime(done) - 2_000;
      console.info(
        `process backend: ${command.join(' ')} with a 2 s timeout ended ${overshoot} ms past its deadline`,
      );
      expect(overshoot).toBeGreaterThanOrEqual(0);
      expect(overshoot).toBeLessThanOrEqual(1_000);
    },
    40_000,
  );

  it('ends a job whose result cannot be stored FAILED, and its logs say the output was not stored', async () => {
    const submitted = await submit(ferry.client, job(['sh', '-c', 'sleep 1; echo lost']));
    await waitFor(ferry.client, submitted.id, ['RUNNING']);
    // A file where the execution's result directory must go: even root cannot create it.
    const blocker = path.join(ferry.dataDir, 'objects', 'executions', submitted.id);
    await fsp.mkdir(path.dirname(blocker), { recursive: true });
    await fsp.writeFile(blocker, 'in the way');

    const done = await waitDone(ferry.client, submitted.id, 30);

    expect(done.state).toBe('FAILED');
    expect(done.reason).toMatch(/result could not be stored/);
    expect(done.result).toBeUndefined();
    for (const query of ['stream=stdout', 'stream=stdout&follow=true&offset=0']) {
      const reply = await fetch(`${ferry.url}/v1/executions/${submitted.id}/logs?${query}`);
      expect(reply.status).toBe(409);
      expect(reply.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      const problem = (await reply.json()) as { detail: string };
      expect(problem.detail).toMatch(
        /output of execution .* was not stored: it ended FAILED: the result could not be stored/,
      );
    }
  }, 40_000);
});

describe('a process-backend server killed with SIGKILL', () => {
  const servers: ServerProcess[] = [];
  const dirs: string[] = [];
  const groups: number[] = [];

  afterEach(async () => {
    for (const server of servers.splice(0)) await server.kill('SIGKILL');
    // Whatever a failed run left behind is not left on the machine.
    for (const group of groups.splice(0)) {
      try {
        process.kill(-group, 'SIGKILL');
      } catch {}
    }
    for (const dir of dirs.splice(0)) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('leaves no process of its jobs once restarted, and their executions end FAILED saying why', async () => {
    const dataDir = await tempDir();
    const marks = await tempDir('ferry-marks-');
    dirs.push(dataDir, marks);
    const env = { FERRY_DATA_DIR: dataDir, FERRY_BACKEND: 'process', FERRY_SWEEP_INTERVAL_SECONDS: '0.5' };
    const first = await spawnServer(env);
    servers.push(first);
    // The job's first process, and a child it forks into its group.
    const submitted = await submit(
      first.client,
      job(['sh', '-c', `echo $$ > ${marks}/leader; sleep 300 & echo $! > ${marks}/child; exec sleep 300`]),
    );
    await waitFor(first.client, submitted.id, ['RUNNING']);
    const read = async (name: string) => Number((await fsp.readFile(path.join(marks, name), 'utf8')).trim());
    await expect.poll(async () => (await read('child').catch(() => 0)) > 0).toBe(true);
    const leader = await read('leader');
    const child = await read('child');
    groups.push(leader);
    expect(procStat(child)?.pgrp).toBe(leader);
    const group = { pid: leader, startTime: procStat(leader)?.startTime ?? Number.NaN };

    await first.kill('SIGKILL');
    // The crash itself leaves them running: that is what the restart must deal with.
    expect(groupMembers(group).sort()).toEqual([leader, child].sort());
    const second = await spawnServer(env);
    servers.push(second);
    const done = await waitDone(second.client, submitted.id, 30);

    // Neither is left, not even as a process that has not been reaped.
    expect(groupMembers(group)).toEqual([]);
    expect(done.state).toBe('FAILED');
    expect(done.reason).toMatch(/server restarted .* processes were stopped/);
    expect(await fsp.readdir(path.join(dataDir, 'processes'))).toEqual([]);
  }, 60_000);
});
