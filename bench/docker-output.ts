// Output that must not slow the job: jobs printing a lot through the Docker backend (a separate
// `ferry serve` process, driven over HTTP) against the same image and command under plain
// `docker run --log-driver none … > /dev/null`, whose output goes to /dev/null through the
// engine's attach stream (the floor). Two shapes: 100 MB of two-byte lines (`yes | head -c`),
// where a log driver pays per line, and 1 GiB in 64 KiB writes (`dd bs=64k`). The runs of each
// shape are interleaved, so a slow moment of the machine does not land on one side only; the
// server's peak resident memory over all of them is read from the kernel (VmHWM).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import type { FerryClient } from '../cli/client.ts';
import type { Execution } from '../shared/domain/execution.ts';
import { spawnServer, tempDir } from '../test/support/server.ts';
import { type Distribution, distribution } from './latency.ts';

export const OUTPUT_IMAGE = 'ferry-test:busybox';
const LIMIT = '1MiB';

export interface OutputShape {
  readonly name: string;
  readonly command: readonly string[];
  readonly bytes: number;
}

export const OUTPUT_SHAPES: readonly OutputShape[] = [
  { name: '100 MB of two-byte lines', command: ['sh', '-c', 'yes | head -c 100000000'], bytes: 100_000_000 },
  {
    name: '1 GiB in 64 KiB writes',
    command: ['sh', '-c', 'dd if=/dev/zero bs=65536 count=16384 2>/dev/null'],
    bytes: 1024 ** 3,
  },
];

export interface ShapeResult {
  readonly shape: OutputShape;
  readonly ferry: Distribution;
  readonly floor: Distribution;
  /** Ferry's median over the floor's median. */
  readonly ratio: number;
}

export interface DockerOutputBench {
  readonly rounds: number;
  readonly shapes: readonly ShapeResult[];
  /** The server process's peak resident set over every run, in MiB. */
  readonly serverPeakRssMiB: number;
}

export async function benchDockerOutput(rounds: number): Promise<DockerOutputBench> {
  const dataDir = await tempDir('ferry-bench-output-');
  const server = await spawnServer({
    FERRY_DATA_DIR: dataDir,
    FERRY_BACKEND: 'docker',
    FERRY_LOG_LEVEL: 'error',
    FERRY_MAX_CONCURRENCY: '1',
  });
  const shapes: ShapeResult[] = [];
  try {
    // One of each first, unmeasured: images and page cache warm, the wrapper built.
    for (const shape of OUTPUT_SHAPES) {
      await ferryOnce(server.client, shape);
      await floorOnce(shape);
    }
    for (const shape of OUTPUT_SHAPES) {
      const ferry: number[] = [];
      const floor: number[] = [];
      for (let round = 0; round < rounds; round++) {
        if (round % 2 === 0) {
          ferry.push(await ferryOnce(server.client, shape));
          floor.push(await floorOnce(shape));
        } else {
          floor.push(await floorOnce(shape));
          ferry.push(await ferryOnce(server.client, shape));
        }
      }
      const f = distribution(ferry);
      const d = distribution(floor);
      shapes.push({ shape, ferry: f, floor: d, ratio: f.p50 / d.p50 });
    }
    const serverPeakRssMiB = await peakRssMiB(server.child.pid ?? 0);
    return { rounds, shapes, serverPeakRssMiB };
  } finally {
    await server.kill('SIGTERM');
    await fsp.rm(dataDir, { recursive: true, force: true });
  }
}

/** One job through Ferry: POST /v1/jobs, then wait until terminal. Milliseconds. */
async function ferryOnce(client: FerryClient, shape: OutputShape): Promise<number> {
  const started = performance.now();
  const submitted = await client.json<Execution>('POST', '/v1/jobs', {
    image: OUTPUT_IMAGE,
    command: shape.command,
    outputLimits: { stdoutBytes: LIMIT, stderrBytes: LIMIT },
  });
  let execution: Execution;
  for (;;) {
    const reply = await client.json<Execution>(
      'GET',
      `/v1/executions/${submitted.body.id}/wait?timeoutSeconds=60`,
    );
    if (reply.headers.get('ferry-wait-done') === 'true') {
      execution = reply.body;
      break;
    }
  }
  const elapsed = performance.now() - started;
  // Checked after the clock stops: every byte was counted and the limit was held.
  const stdout = execution.result?.stdout;
  if (
    execution.state !== 'COMPLETED' ||
    execution.exitCode !== 0 ||
    stdout?.totalBytes !== shape.bytes ||
    stdout.storedBytes > 1024 * 1024 ||
    !stdout.truncated
  ) {
    throw new Error(
      `Ferry job ${execution.id} (${shape.name}) ended ${execution.state}, exit ${execution.exitCode}, ` +
        `${stdout?.totalBytes} bytes counted, ${stdout?.storedBytes} stored: ${execution.reason ?? ''}`,
    );
  }
  return elapsed;
}

/** `docker run --rm --log-driver none --network none IMAGE CMD > /dev/null`. Milliseconds. */
async function floorOnce(shape: OutputShape): Promise<number> {
  const started = performance.now();
  const child = spawn(
    'docker',
    ['run', '--rm', '--log-driver', 'none', '--network', 'none', OUTPUT_IMAGE, ...shape.command],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const [code] = (await once(child, 'close')) as [number | null];
  const elapsed = performance.now() - started;
  if (code !== 0) throw new Error(`docker run (${shape.name}) exited ${code}: ${stderr}`);
  return elapsed;
}

/** The process's peak resident set (VmHWM), in MiB. */
async function peakRssMiB(pid: number): Promise<number> {
  const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  const kib = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1]);
  if (!Number.isFinite(kib)) throw new Error(`no VmHWM for process ${pid}`);
  return kib / 1024;
}
