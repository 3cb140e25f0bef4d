// Starts moto server, the AWS API emulator, on a free loopback port, for the test suites and
// `ferry emulate aws`. It lives in the checkout's virtualenv (.venv), created with the pinned
// version when missing.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
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

async function waitUntilUp(endpoint: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`moto server exited with ${child.exitCode}: ${log()}`);
    try {
      const reply = await fetch(`${endpoint}/moto-api/`);
      if (reply.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`moto server did not answer at ${endpoint}: ${log()}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

export async function startMoto(
  python = 'python3',
): Promise<{ endpoint: string; stop: () => Promise<void> }> {
  ensureMoto(python);
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  let output = '';
  const child = spawn(MOTO, ['-H', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  });
  await waitUntilUp(endpoint, child, () => output);
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
