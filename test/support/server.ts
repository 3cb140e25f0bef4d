// Test harness: a real Ferry server on a free loopback port with its own data directory,
// either in this process or as a separate `ferry serve` process that a test can kill.
import { type ChildProcess, spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FerryClient } from '../../cli/client.ts';
import { loadConfig } from '../../shared/config.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import { createLogger } from '../../shared/logger.ts';
import { type LocalServer, startLocalServer } from '../../shared/runtime/local.ts';

export async function tempDir(prefix = 'ferry-test-'): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

export interface TestServer {
  readonly url: string;
  readonly client: FerryClient;
  readonly server: LocalServer;
  readonly dataDir: string;
  close(): Promise<void>;
}

/** Starts a server in this process. `env` holds FERRY_* settings on top of the test defaults. */
export async function startServer(env: Record<string, string> = {}, dataDir?: string): Promise<TestServer> {
  const dir = dataDir ?? (await tempDir());
  const config = loadConfig({
    FERRY_PORT: '0',
    FERRY_DATA_DIR: dir,
    FERRY_SWEEP_INTERVAL_SECONDS: '0.5',
    PATH: process.env.PATH,
    ...env,
  });
  const server = await startLocalServer(config, {
    log: createLogger(process.env.FERRY_TEST_LOG === '1' ? 'debug' : 'error'),
  });
  return {
    url: server.url,
    client: new FerryClient(server.url),
    server,
    dataDir: dir,
    close: () => server.close(),
  };
}

export interface ServerProcess {
  readonly url: string;
  readonly client: FerryClient;
  readonly child: ChildProcess;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `ferry serve` as its own process, so a test can kill it like a crash would. */
export async function spawnServer(env: Record<string, string>): Promise<ServerProcess> {
  const child = spawn(process.execPath, [path.resolve('bin/ferry.js'), 'serve'], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, FERRY_PORT: '0', FERRY_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let seen = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ferry serve did not start: ${seen}`)), 30_000);
    child.stderr?.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      const match = /serving on (http:\/\/\S+)/.exec(seen);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once('exit', (code) => reject(new Error(`ferry serve exited with ${code}: ${seen}`)));
  });
  return {
    url,
    client: new FerryClient(url),
    child,
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      await exited;
    },
  };
}

/** Submits a job and returns the execution. */
export async function submit(client: FerryClient, spec: Record<string, unknown>): Promise<Execution> {
  return (await client.json<Execution>('POST', '/v1/jobs', spec)).body;
}

/** Waits (server-side long polls) until the execution is terminal; fails the test after `seconds`. */
export async function waitDone(client: FerryClient, id: string, seconds = 60): Promise<Execution> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const reply = await client.json<Execution>('GET', `/v1/executions/${id}/wait?timeoutSeconds=5`);
    if (reply.headers.get('ferry-wait-done') === 'true') return reply.body;
    if (Date.now() > deadline) throw new Error(`execution ${id} still ${reply.body.state} after ${seconds}s`);
  }
}

/** Waits until the execution reaches one of `states`. */
export async function waitFor(
  client: FerryClient,
  id: string,
  states: string[],
  seconds = 60,
): Promise<Execution> {
  const deadline = Date.now() + seconds * 1000;
  const query = states.map((s) => `state=${s}`).join('&');
  for (;;) {
    const reply = await client.json<Execution>('GET', `/v1/executions/${id}/wait?timeoutSeconds=5&${query}`);
    if (states.includes(reply.body.state)) return reply.body;
    if (Date.now() > deadline) throw new Error(`execution ${id} still ${reply.body.state} after ${seconds}s`);
  }
}

export async function stdoutOf(client: FerryClient, id: string, stream: 'stdout' | 'stderr' = 'stdout') {
  return (await client.bytes(`/v1/executions/${id}/logs?stream=${stream}`)).body;
}

/** From the job's start to its end as the backend saw them, in ms. */
export const runTime = (execution: Execution): number =>
  Date.parse(execution.endedAt ?? '') - Date.parse(execution.startedAt ?? '');
