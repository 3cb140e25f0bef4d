// Jobs per second through the process backend: N trivial jobs submitted over HTTP by a few
// concurrent submitters, run with at most `maxConcurrency` at a time, and timed from the
// first submit until every one of them is terminal (server-side long polls).
import fsp from 'node:fs/promises';
import os from 'node:os';
import type { FerryClient } from '../cli/client.ts';
import type { Execution } from '../shared/domain/execution.ts';
import { startServer } from '../test/support/server.ts';

export interface ThroughputOptions {
  readonly jobs: number;
  readonly maxConcurrency: number;
  /** Requests in flight at once from the client side (submits, then waits). */
  readonly clientParallelism: number;
}

export interface ThroughputBench {
  readonly jobs: number;
  readonly seconds: number;
  readonly jobsPerSecond: number;
  /** Time until every job was accepted (202), from the first submit. */
  readonly submitSeconds: number;
  readonly completed: number;
  readonly maxConcurrency: number;
  /** vCPU each job asked for. */
  readonly cpuPerJob: number;
}

export async function benchThroughput(options: ThroughputOptions): Promise<ThroughputBench> {
  // Each job asks for a share of the host's cores small enough that `maxConcurrency` of them
  // fit: the limit under test is the concurrency, not the CPU accounting.
  const cpu = Math.min(0.25, os.cpus().length / options.maxConcurrency);
  const server = await startServer({
    FERRY_BACKEND: 'process',
    FERRY_MAX_CONCURRENCY: String(options.maxConcurrency),
    FERRY_LOG_LEVEL: 'error',
  });
  try {
    // Warm-up: the first job pays for module loading and the first spawn.
    await runBatch(server.client, 4, options.clientParallelism, cpu);
    const started = performance.now();
    const { submitted, finished } = await runBatch(
      server.client,
      options.jobs,
      options.clientParallelism,
      cpu,
    );
    const seconds = (finished - started) / 1000;
    const completed = submitted.filter((e) => e.state === 'COMPLETED' && e.exitCode === 0).length;
    return {
      jobs: options.jobs,
      seconds,
      jobsPerSecond: options.jobs / seconds,
      submitSeconds: (submitted.submittedAt - started) / 1000,
      completed,
      maxConcurrency: options.maxConcurrency,
      cpuPerJob: cpu,
    };
  } finally {
    await server.close();
    await fsp.rm(server.dataDir, { recursive: true, force: true });
  }
}

async function runBatch(client: FerryClient, jobs: number, parallelism: number, cpu: number) {
  const ids = await pool(jobs, parallelism, async () => {
    const reply = await client.json<Execution>('POST', '/v1/jobs', {
      image: 'local',
      command: ['true'],
      resources: { cpu, memory: 128 },
    });
    return reply.body.id;
  });
  const submittedAt = performance.now();
  const ended = await pool(ids.length, parallelism, async (i) => waitTerminal(client, ids[i] ?? ''));
  const finished = performance.now();
  return { submitted: Object.assign(ended, { submittedAt }), finished };
}

async function waitTerminal(client: FerryClient, id: string): Promise<Execution> {
  for (;;) {
    const reply = await client.json<Execution>('GET', `/v1/executions/${id}/wait?timeoutSeconds=30`);
    if (reply.headers.get('ferry-wait-done') === 'true') return reply.body;
  }
}

/** Runs `work(0..count-1)` with at most `parallelism` in flight; results in index order. */
export async function pool<T>(
  count: number,
  parallelism: number,
  work: (index: number) => Promise<T>,
): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const index = next++;
      results[index] = await work(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallelism, count) }, worker));
  return results;
}
