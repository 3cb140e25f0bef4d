// How fast `ferry` answers: `ferry --version` and `ferry ls` (against a server holding a few
// executions) from the build `npm ci` makes, against the same commands run from the TypeScript
// sources through tsx (how every call ran before the build) and through `npx ferry`. Each is a
// fresh process, as when a person types it; the medians of several runs are compared.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import { spawnServer, tempDir } from '../test/support/server.ts';
import { distribution } from './latency.ts';

export interface CliStartBench {
  readonly runs: number;
  readonly versionBuiltMs: number;
  readonly lsBuiltMs: number;
  readonly versionSourcesMs: number;
  readonly lsSourcesMs: number;
  readonly versionNpxMs: number;
}

const FROM_SOURCES =
  "const { register } = await import('tsx/esm/api'); register(); const { main } = await import('./cli/main.ts'); process.exitCode = await main(process.argv.slice(1));";

async function timed(command: string, args: readonly string[], env: Record<string, string>): Promise<number> {
  const started = performance.now();
  const child = spawn(command, args, {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const [code] = (await once(child, 'close')) as [number | null];
  const elapsed = performance.now() - started;
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${code}: ${stderr}`);
  return elapsed;
}

async function median(runs: number, once: () => Promise<number>): Promise<number> {
  await once();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) samples.push(await once());
  return distribution(samples).p50;
}

export async function benchCliStart(runs: number): Promise<CliStartBench> {
  // The build `npm ci` makes, made afresh so that it is newer than every source.
  await timed(process.execPath, ['scripts/build-cli.mjs'], {});
  const dataDir = await tempDir('ferry-bench-cli-');
  const server = await spawnServer({
    FERRY_DATA_DIR: dataDir,
    FERRY_BACKEND: 'process',
    FERRY_LOG_LEVEL: 'error',
  });
  try {
    for (let i = 0; i < 20; i++) {
      await server.client.json('POST', '/v1/jobs', {
        image: 'x/y:1',
        command: ['true'],
        labels: { n: String(i) },
      });
    }
    const env = { FERRY_URL: server.url };
    const built = (args: string[]) => () => timed(process.execPath, ['bin/ferry.js', ...args], env);
    const sources = (args: string[]) => () =>
      timed(process.execPath, ['--input-type=module', '-e', FROM_SOURCES, '--', ...args], env);
    return {
      runs,
      versionBuiltMs: await median(runs, built(['--version'])),
      lsBuiltMs: await median(runs, built(['ls'])),
      versionSourcesMs: await median(runs, sources(['--version'])),
      lsSourcesMs: await median(runs, sources(['ls'])),
      versionNpxMs: await median(runs, () => timed('npx', ['ferry', '--version'], env)),
    };
  } finally {
    await server.kill('SIGTERM');
    await fsp.rm(dataDir, { recursive: true, force: true });
  }
}
