// Running the real `ferry` binary as a person would: with only the environment a user has plus
// FERRY_URL, either with its output captured, or in a terminal (`script` gives it one) that a
// test reads like a screen and can type into.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';

export const FERRY = path.resolve('bin/ferry.js');

export interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

const userEnv = (url: string) => ({ PATH: process.env.PATH, HOME: process.env.HOME, FERRY_URL: url });

/** Runs `ferry ARGS…` against `url` and gives its exit code and what it printed. */
export function runFerry(args: readonly string[], url: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FERRY, ...args], {
      env: userEnv(url),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export interface Terminal {
  /** Everything shown so far, stdout and stderr as the terminal mixed them. */
  screen(): string;
  /** Types into the terminal (`\x03` is Ctrl-C). */
  type(text: string): void;
  /** Resolves with the command's exit code once it has ended. */
  readonly closed: Promise<number | null>;
}

/** Runs `ferry ARGS…` in a terminal of its own. */
export function ferryInTerminal(args: readonly string[], url: string): Terminal {
  const command = [process.execPath, FERRY, ...args].join(' ');
  const child = spawn('script', ['-qfec', command, '/dev/null'], {
    env: userEnv(url),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let screen = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    screen += chunk;
  });
  return {
    screen: () => screen,
    type: (text) => child.stdin.write(text),
    closed: once(child, 'close').then(([code]) => code as number | null),
  };
}
