// Dynoxide, a DynamoDB emulator on SQLite, for the benchmark that drains a long queue: moto's
// DynamoDB reads every item of a table for each query of an index and copies the table for
// each transaction, so with thousands of executions stored it, not Ferry, would set the pace.
// Dynoxide keeps its indexes in SQLite. It is built once from crates.io with cargo, pinned,
// into .tools/ in the checkout.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type LocalServer, serveOnFreePort } from '../shared/adapters/emulated/moto-server.ts';

const VERSION = '3.2.0';
const ROOT = path.join(fileURLToPath(new URL('../', import.meta.url)), '.tools', `dynoxide-${VERSION}`);
const BINARY = path.join(ROOT, 'bin', 'dynoxide');

function ensureDynoxide(progress: (line: string) => void): void {
  if (fs.existsSync(BINARY)) return;
  progress(`building dynoxide ${VERSION} with cargo into ${ROOT} (once; a few minutes)`);
  try {
    execFileSync('cargo', ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error('the drain benchmark builds Dynoxide with cargo, which is not on the PATH: install Rust');
  }
  execFileSync(
    'cargo',
    [
      'install',
      'dynoxide-rs',
      '--version',
      VERSION,
      '--locked',
      '--root',
      ROOT,
      '--no-default-features',
      '--features',
      'native-sqlite,http-server,cli',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
}

export async function startDynoxide(
  progress: (line: string) => void = () => undefined,
): Promise<LocalServer> {
  ensureDynoxide(progress);
  return serveOnFreePort({
    name: 'dynoxide',
    command: BINARY,
    args: (port) => ['--port', String(port)],
    // Any answer means it listens; DynamoDB answers an unsigned request with an error.
    answers: async (endpoint) => {
      await fetch(endpoint, { method: 'POST' });
      return true;
    },
    timeoutMs: 30_000,
  });
}
