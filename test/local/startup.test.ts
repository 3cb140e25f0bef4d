// `ferry serve` starting and stopping, as a user runs it: what must be fixed (a busy port, a
// data directory it cannot write) ends it at once with one line naming the setting to
// change, before it touches any container; SIGINT and SIGTERM end it promptly and leave
// running containers to the next start, which adopts them.
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
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
  throw new Error('CI=true but no Docker Engine is available: the start-up suite must run');
}

interface Ended {
  readonly code: number | null;
  readonly stderr: string;
  readonly ms: number;
}

/** Runs `ferry` with these settings until it exits by itself (or is killed after `limitMs`). */
function runFerry(args: string[], env: Record<string, string>, limitMs = 30_000): Promise<Ended> {
  return runNode([path.resolve('bin/ferry.js'), ...args], env, limitMs);
}

/** Runs Node with these arguments and settings until it exits by itself (or is killed after `limitMs`). */
function runNode(args: string[], env: Record<string, string>, limitMs = 30_000): Promise<Ended> {
  const started = Date.now();
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const limit = setTimeout(() => child.kill('SIGKILL'), limitMs);
  return new Promise((resolve) => {
    child.once('exit', (code) => {
      clearTimeout(limit);
      resolve({ code, stderr, ms: Date.now() - started });
    });
  });
}

/** A port something else holds for as long as the test runs. */
async function occupiedPort(): Promise<{ port: number; release: () => Promise<void> }> {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  return {
    port: (holder.address() as net.AddressInfo).port,
    release: () => new Promise((resolve) => holder.close(() => resolve())),
  };
}

const lines = (text: string) => text.split('\n').filter((line) => line !== '');

/**
 * How long loading what `ferry serve` loads (the command line and the local server's modules,
 * compiled as `bin/ferry.js` compiles them) and exiting takes on this machine now: what a failing
 * start may take on top of it is Ferry's own start-up, and that is what the tests bound, so a
 * busy machine does not make them flaky.
 */
let baselineMs = 0;
const dirs: string[] = [];
beforeAll(async () => {
  const loaded = await runNode(
    [
      '--input-type=module',
      '--eval',
      [
        "import { register } from 'tsx/esm/api';",
        'register();',
        `await import(${JSON.stringify(path.resolve('cli/main.ts'))});`,
        `await import(${JSON.stringify(path.resolve('shared/runtime/local.ts'))});`,
      ].join(' '),
    ],
    {},
  );
  expect(loaded.code, loaded.stderr).toBe(0);
  baselineMs = loaded.ms;
});
afterAll(async () => {
  for (const dir of dirs.splice(0)) await fsp.rm(dir, { recursive: true, force: true });
});

async function freshDir(): Promise<string> {
  const dir = await tempDir();
  dirs.push(dir);
  return dir;
}

describe('a start that cannot succeed ends at once, with one line saying what to change', () => {
  it('a busy port: exit 1 within 2 s, the hint, and nothing opened in the data directory', async () => {
    const held = await occupiedPort();
    const dataDir = path.join(await freshDir(), 'data');
    try {
      const ended = await runFerry(['serve'], {
        FERRY_PORT: String(held.port),
        FERRY_DATA_DIR: dataDir,
        FERRY_BACKEND: 'process',
      });

      expect(ended.code, ended.stderr).toBe(1);
      expect(lines(ended.stderr)).toEqual([
        `ferry: port ${held.port} on 127.0.0.1 is in use; set FERRY_PORT to a free port`,
      ]);
      expect(
        ended.ms - baselineMs,
        `exited after ${ended.ms} ms; loading its modules takes ${baselineMs} ms`,
      ).toBeLessThan(2000);
      expect(await fsp.readdir(dataDir)).toEqual([]);
    } finally {
      await held.release();
    }
  });

  it.each([
    ['under /proc', '/proc/ferry-data'],
    ['below a file', '/etc/hostname/ferry-data'],
  ])('a data directory %s: exit 1 within 2 s and the hint', async (_name, dataDir) => {
    const ended = await runFerry(['serve'], {
      FERRY_PORT: '0',
      FERRY_DATA_DIR: dataDir,
      FERRY_BACKEND: 'process',
    });

    expect(ended.code, ended.stderr).toBe(1);
    expect(lines(ended.stderr)).toHaveLength(1);
    expect(ended.stderr).toMatch(
      new RegExp(
        `^ferry: cannot write the data directory ${dataDir} \\(\\w+\\); set FERRY_DATA_DIR to a writable directory\\n$`,
      ),
    );
    expect(
      ended.ms - baselineMs,
      `exited after ${ended.ms} ms; loading its modules takes ${baselineMs} ms`,
    ).toBeLessThan(2000);
  });
});

describe.skipIf(!dockerAvailable)('with running containers', () => {
  const servers: ServerProcess[] = [];
  const submitted: string[] = [];

  async function serve(dataDir: string): Promise<ServerProcess> {
    const server = await spawnServer({
      FERRY_DATA_DIR: dataDir,
      FERRY_BACKEND: 'docker',
      FERRY_SWEEP_INTERVAL_SECONDS: '0.5',
    });
    servers.push(server);
    return server;
  }

  async function runningJob(server: ServerProcess, seconds: number): Promise<Execution> {
    const execution = await submit(server.client, {
      image,
      command: ['sh', '-c', `echo start; sleep ${seconds}; echo end`],
      resources: { cpu: 0.25, memory: 64 },
    });
    submitted.push(execution.id);
    return waitFor(server.client, execution.id, ['RUNNING']);
  }

  afterEach(async () => {
    for (const server of servers.splice(0)) await server.kill('SIGKILL');
    await removeContainersOf(submitted.splice(0));
  });

  it("a second server on the first one's port exits and never touches the first one's job", async () => {
    const first = await serve(await freshDir());
    const job = await runningJob(first, 6);
    const otherDir = await freshDir();

    const ended = await runFerry(['serve'], {
      FERRY_PORT: new URL(first.url).port,
      FERRY_DATA_DIR: otherDir,
      FERRY_BACKEND: 'docker',
    });

    expect(ended.code, ended.stderr).toBe(1);
    expect(lines(ended.stderr)).toEqual([
      `ferry: port ${new URL(first.url).port} on 127.0.0.1 is in use; set FERRY_PORT to a free port`,
    ]);
    expect(ended.ms - baselineMs).toBeLessThan(2000);
    expect(await fsp.readdir(otherDir), 'it made no server identity: it never reached Docker').toEqual([]);
    expect((await containersOf([job.id])).map((c) => c.State)).toEqual(['running']);
    const done = await waitDone(first.client, job.id, 60);
    expect(done).toMatchObject({ state: 'COMPLETED', exitCode: 0 });
    expect((await stdoutOf(first.client, job.id)).toString()).toBe('start\nend\n');
  }, 90_000);

  it.each(['SIGTERM', 'SIGINT'] as const)(
    '%s ends the server within 5 s; its running container is adopted at the next start',
    async (signal) => {
      const dataDir = await freshDir();
      const server = await serve(dataDir);
      const job = await runningJob(server, 8);

      const exited = new Promise<number | null>((resolve) => server.child.once('exit', resolve));
      const sent = Date.now();
      server.child.kill(signal);
      const code = await exited;
      const ms = Date.now() - sent;

      expect(code).toBe(0);
      expect(ms, `exited ${ms} ms after ${signal}`).toBeLessThan(5000);
      expect((await containersOf([job.id])).map((c) => c.State)).toEqual(['running']);
      const again = await serve(dataDir);
      const done = await waitDone(again.client, job.id, 60);
      expect(done).toMatchObject({ state: 'COMPLETED', exitCode: 0 });
      expect((await stdoutOf(again.client, job.id)).toString()).toBe('start\nend\n');
    },
    90_000,
  );
});
