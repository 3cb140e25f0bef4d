// Submissions per second through the local store: bids POSTed over HTTP (each with an
// Idempotency-Key, so the idempotency record is written too) by a few concurrent clients,
// and, below HTTP, executions created and moved once through the store directly.

import { randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
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
  };
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
