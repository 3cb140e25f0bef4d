// Starts moto server, the AWS API emulator, on a free loopback port, for the test suites and
// `ferry emulate aws`. It lives in the checkout's virtualenv (.venv), created with the pinned
// version when missing.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const VENV = path.join(ROOT, '.venv');
const REQUIREMENTS = path.join(ROOT, 'test/aws/requirements.txt');
const MOTO = path.join(VENV, 'bin', 'moto_server');

function ensureMoto(python: string): void {
  if (fs.existsSync(MOTO)) return;
  console.log(`[ferry] creating ${VENV} with ${fs.readFileSync(REQUIREMENTS, 'utf8').trim()}`);
  execFileSync(python, ['-m', 'venv', VENV], { stdio: 'inherit' });
  execFileSync(path.join(VENV, 'bin', 'pip'), ['install', '--quiet', '-r', REQUIREMENTS], {
    stdio: 'inherit',
  });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface LocalServer {
  readonly endpoint: string;
  stop(): Promise<void>;
}

/**
 * Starts an emulator's server process on a free port (loopback unless given) and waits until `answers` says
 * it serves; its last output goes into the error when it exits or never answers.
 */
export async function serveOnFreePort(options: {
  readonly name: string;
  readonly command: string;
  readonly args: (port: number) => string[];
  readonly answers: (endpoint: string) => Promise<boolean>;
  readonly timeoutMs: number;
  /** The address it is reached at (and listens on): loopback unless given. */
  readonly host?: string;
}): Promise<LocalServer> {
  const port = await freePort();
  const endpoint = `http://${options.host ?? '127.0.0.1'}:${port}`;
  let output = '';
  const child = spawn(options.command, options.args(port), { stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${options.name} exited with ${child.exitCode}: ${output}`);
    const up = await options.answers(endpoint).catch(() => false);
    if (up) break;
    if (Date.now() > deadline) throw new Error(`${options.name} did not answer at ${endpoint}: ${output}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return {
    endpoint,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

export async function startMoto(python = 'python3', host = '127.0.0.1'): Promise<LocalServer> {
  ensureMoto(python);
  return serveOnFreePort({
    name: 'moto server',
    command: MOTO,
    host,
    args: (port) => ['-H', host, '-p', String(port)],
    answers: async (endpoint) => (await fetch(`${endpoint}/moto-api/`)).ok,
    timeoutMs: 60_000,
  });
}
