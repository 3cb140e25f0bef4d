// Latency of one trivial job, submitted to finished: through Ferry (an in-process local
// server on the Docker backend, driven over HTTP like any caller) against the same job
// as a plain `docker run --rm`. Both include container create, start, wait, remove and
// output capture; Ferry's figure also includes its HTTP round trips (POST, then long-poll
// GETs until the execution is terminal). The two are interleaved, after a warm-up, so
// that a slow moment of the machine does not land on one side only.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import type { FerryClient } from '../cli/client.ts';
import type { Execution } from '../shared/domain/execution.ts';
import { startServer } from '../test/support/server.ts';

export const LATENCY_IMAGE = 'ferry-test:busybox';
const COMMAND = ['echo', 'hello'];
const EXPECTED_STDOUT = 'hello\n';

export interface LatencyOptions {
  readonly rounds: number;
  readonly warmup: number;
}

export interface Distribution {
  readonly samplesMs: readonly number[];
  readonly p50: number;
  readonly p90: number;
  readonly min: number;
  readonly max: number;
}

export interface LatencyBench {
  readonly ferry: Distribution;
  readonly docker: Distribution;
  /** Ferry's median over docker run's median. */
  readonly ratio: number;
}

export async function benchLatency(options: LatencyOptions): Promise<LatencyBench> {
  const server = await startServer({ FERRY_BACKEND: 'docker', FERRY_LOG_LEVEL: 'error' });
  const ferry: number[] = [];
  const docker: number[] = [];
  try {
    for (let i = 0; i < options.warmup; i += 1) {
      await ferryOnce(server.client);
      await dockerRunOnce();
    }
    for (let round = 0; round < options.rounds; round += 1) {
      // Alternate which side goes first, so neither always follows the other's cleanup.
      if (round % 2 === 0) {
        ferry.push(await ferryOnce(server.client));
        docker.push(await dockerRunOnce());
      } else {
        docker.push(await dockerRunOnce());
        ferry.push(await ferryOnce(server.client));
      }
    }
  } finally {
    await server.close();
    await fsp.rm(server.dataDir, { recursive: true, force: true });
  }
  const f = distribution(ferry);
  const d = distribution(docker);
  return { ferry: f, docker: d, ratio: f.p50 / d.p50 };
}

/** One job through Ferry's HTTP API: POST /v1/jobs, then wait until terminal. Milliseconds. */
async function ferryOnce(client: FerryClient): Promise<number> {
  const started = performance.now();
  const submitted = await client.json<Execution>('POST', '/v1/jobs', {
    image: LATENCY_IMAGE,
    command: COMMAND,
  });
  let execution: Execution;
  for (;;) {
    const reply = await client.json<Execution>(
      'GET',
      `/v1/executions/${submitted.body.id}/wait?timeoutSeconds=30`,
    );
    if (reply.headers.get('ferry-wait-done') === 'true') {
      execution = reply.body;
      break;
    }
  }
  const elapsed = performance.now() - started;
  // Checked after the clock stops: the run must have really happened and been captured.
  const stdout = execution.result?.stdout.totalBytes;
  if (execution.state !== 'COMPLETED' || execution.exitCode !== 0 || stdout !== EXPECTED_STDOUT.length) {
    throw new Error(
      `Ferry job ${execution.id} ended ${execution.state} (exit ${execution.exitCode}, ${stdout} stdout bytes): ${execution.reason ?? ''}`,
    );
  }
  return elapsed;
}

/** The same job as `docker run --rm --network none IMAGE echo hello`, output read from its pipe. */
async function dockerRunOnce(): Promise<number> {
  const started = performance.now();
  const child = spawn('docker', ['run', '--rm', '--network', 'none', LATENCY_IMAGE, ...COMMAND], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const [code] = (await once(child, 'close')) as [number | null];
  const elapsed = performance.now() - started;
  const stdout = Buffer.concat(out).toString('utf8');
  if (code !== 0 || stdout !== EXPECTED_STDOUT) {
    throw new Error(`docker run exited ${code} with ${JSON.stringify(stdout)}: ${Buffer.concat(err)}`);
  }
  return elapsed;
}

export function distribution(samples: readonly number[]): Distribution {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    samplesMs: samples,
    p50: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    min: sorted[0] ?? Number.NaN,
    max: sorted.at(-1) ?? Number.NaN,
  };
}

/** Linear interpolation between closest ranks, on sorted values. */
function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const position = (sorted.length - 1) * q;
  const below = Math.floor(position);
  const above = Math.ceil(position);
  const low = sorted[below] ?? Number.NaN;
  const high = sorted[above] ?? Number.NaN;
  return low + (high - low) * (position - below);
}
