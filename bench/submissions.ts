// Submissions per second through the local store: bids POSTed over HTTP (each with an
// Idempotency-Key, so the idempotency record is written too) by a few concurrent clients;
// below HTTP, executions created and moved once through the store directly; and the same job
// created through the TES API beside POST /v1/jobs.

import { randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import type { FerryClient } from '../cli/client.ts';
import { LocalDatabase } from '../shared/adapters/local/database.ts';
import { SqliteExecutionStore } from '../shared/adapters/local/sqlite-store.ts';
import { executionIds } from '../shared/adapters/system.ts';
import { moveTo } from '../shared/use-cases/transitions.ts';
import { offeredExecution } from '../test/support/fixtures.ts';
import { startServer, tempDir } from '../test/support/server.ts';
import { pool } from './throughput.ts';

/**
 * The same measures on the JSON-lines journal store this database replaced (commit 1870cf9,
 * 2026-11-29, median of three runs of 2,000 on the 2-core bench machine). That store
 * answered before its writes reached the disk and never synced them.
 */
export const JOURNAL_BASELINE = {
  measuredOn: 'commit 1870cf9, 2026-11-29',
  httpPerSecond: 777,
  storePerSecond: 11_455,
} as const;

export interface SubmissionsBench {
  readonly submissions: number;
  readonly parallelism: number;
  /** HTTP `POST /v1/bids` answered 201 per second. */
  readonly httpPerSecond: number;
  /** `store.create` then one conditional `store.update`, one record at a time, per second. */
  readonly storePerSecond: number;
  /** Tasks created per second through TES `POST /ga4gh/tes/v1/tasks`, median of the rounds. */
  readonly tesPerSecond: number;
  /** Jobs submitted per second through `POST /v1/jobs` in the same rounds, median. */
  readonly jobsPerSecond: number;
  readonly tesRounds: number;
  readonly tesPerRound: number;
}

export async function benchSubmissions(options: {
  submissions: number;
  parallelism: number;
}): Promise<SubmissionsBench> {
  return {
    submissions: options.submissions,
    parallelism: options.parallelism,
    httpPerSecond: await httpSubmissions(options.submissions, options.parallelism),
    storePerSecond: await storeSubmissions(options.submissions),
    ...(await tesBesideJobs(TES_PER_ROUND, TES_ROUNDS, options.parallelism)),
  };
}

/**
 * Cancels what is still queued and waits for what runs, so the server closes with nothing in
 * flight (the measure is of creating, not of running: the host runs two of these at a time).
 */
async function settled(client: FerryClient): Promise<void> {
  for (;;) {
    const page = await client.json<{ items: { id: string; state: string }[] }>(
      'GET',
      '/v1/executions?state=QUEUED&state=LAUNCHING&state=RUNNING&limit=500',
    );
    if (page.body.items.length === 0) return;
    for (const execution of page.body.items) {
      if (execution.state === 'QUEUED') {
        await client.json('POST', `/v1/executions/${execution.id}/cancel`).catch(() => undefined);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Rounds of each side; odd, for a median. */
const TES_ROUNDS = 5;
const TES_PER_ROUND = 500;

/**
 * The same job created through TES and through /v1/jobs, on one server, in interleaved rounds:
 * each is a bid and an accept in one write, so the difference is the TES mapping and shape.
 */
async function tesBesideJobs(perRound: number, rounds: number, parallelism: number) {
  const server = await startServer({ FERRY_BACKEND: 'process', FERRY_LOG_LEVEL: 'error' });
  const post = async (path: string, body: object, status: number) => {
    const reply = await server.client.json('POST', path, body);
    if (reply.status !== status) throw new Error(`POST ${path} answered ${reply.status}`);
  };
  const job = () => post('/v1/jobs', { image: 'local', command: ['true'] }, 202);
  const task = () => post('/ga4gh/tes/v1/tasks', { executors: [{ image: 'local', command: ['true'] }] }, 200);
  const rate = async (submit: () => Promise<void>) => {
    // From a quiet server each time: the jobs a round queued would otherwise still be starting
    // and running through the next, slowing whichever side came later, more each round.
    await settled(server.client);
    const started = performance.now();
    await pool(perRound, parallelism, submit);
    return perRound / ((performance.now() - started) / 1000);
  };
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;
  try {
    await pool(20, parallelism, job);
    await pool(20, parallelism, task);
    const jobs: number[] = [];
    const tasks: number[] = [];
    for (let round = 0; round < rounds; round++) {
      // Each side goes first in turn.
      if (round % 2 === 0) {
        jobs.push(await rate(job));
        tasks.push(await rate(task));
      } else {
        tasks.push(await rate(task));
        jobs.push(await rate(job));
      }
    }
    await settled(server.client);
    return {
      jobsPerSecond: median(jobs),
      tesPerSecond: median(tasks),
      tesRounds: rounds,
      tesPerRound: perRound,
    };
  } finally {
    await server.close();
    await fsp.rm(server.dataDir, { recursive: true, force: true });
  }
}

async function httpSubmissions(count: number, parallelism: number): Promise<number> {
  const server = await startServer({ FERRY_BACKEND: 'process', FERRY_LOG_LEVEL: 'error' });
  try {
    const bid = async () => {
      const reply = await server.client.json(
        'POST',
        '/v1/bids',
        { image: 'local', command: ['true'] },
        {
          'idempotency-key': randomUUID(),
        },
      );
      if (reply.status !== 201) throw new Error(`POST /v1/bids answered ${reply.status}`);
    };
    await pool(20, parallelism, bid);
    const started = performance.now();
    await pool(count, parallelism, bid);
    return count / ((performance.now() - started) / 1000);
  } finally {
    await server.close();
    await fsp.rm(server.dataDir, { recursive: true, force: true });
  }
}

async function storeSubmissions(count: number): Promise<number> {
  const dir = await tempDir('ferry-bench-store-');
  const database = LocalDatabase.open(dir);
  const store = new SqliteExecutionStore(database, Buffer.alloc(32));
  const ids = executionIds();
  try {
    const started = performance.now();
    for (let i = 0; i < count; i++) {
      const offered = offeredExecution(ids.next(), new Date().toISOString());
      await store.create(offered);
      await store.update(moveTo(offered, 'QUEUED', new Date()), offered);
    }
    return count / ((performance.now() - started) / 1000);
  } finally {
    database.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
