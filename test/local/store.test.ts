// The local database under the faults a real machine has: a server killed mid-submission,
// a damaged file, a read-only data directory, a second server on the same directory, and
// a data directory written by the older journal store. Black-box over HTTP, process backend.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { Execution } from '../../shared/domain/execution.ts';
import {
  type ServerProcess,
  spawnServer,
  startServer,
  type TestServer,
  tempDir,
  waitDone,
} from '../support/server.ts';

const FIXTURE = path.resolve('test/fixtures/journal-data-dir');
const processEnv = (dataDir: string) => ({
  FERRY_DATA_DIR: dataDir,
  FERRY_BACKEND: 'process',
  FERRY_MAX_CONCURRENCY: '8',
  FERRY_SWEEP_INTERVAL_SECONDS: '0.5',
});
const appendJob = (line: string, file: string) => ({
  image: 'busybox',
  command: ['sh', '-c', `echo ${line} >> ${file}`],
  resources: { cpu: 0.25, memory: 64 },
});

/** Runs `ferry serve` expecting it to refuse to start; kills it if it serves instead. */
async function refusedStart(env: Record<string, string>): Promise<{ code: number | null; lines: string[] }> {
  const child = spawn(process.execPath, [path.resolve('bin/ferry.js'), 'serve'], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, FERRY_PORT: '0', FERRY_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, lines: stderr.trim().split('\n') };
}

/** Every execution the default caller can list, all pages. */
async function listAll(url: string): Promise<Execution[]> {
  const all: Execution[] = [];
  let cursor: string | undefined;
  do {
    const reply = await fetch(`${url}/v1/executions?limit=500${cursor ? `&cursor=${cursor}` : ''}`);
    const page = (await reply.json()) as { items: Execution[]; nextCursor?: string };
    all.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor !== undefined);
  return all;
}

async function post(url: string, route: string, body: unknown, key?: string) {
  const reply = await fetch(`${url}${route}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }) },
    body: JSON.stringify(body),
  });
  return {
    status: reply.status,
    type: reply.headers.get('content-type'),
    body: (await reply.json()) as { id: string; executionId: string; detail: string },
  };
}

async function pool<T>(count: number, parallelism: number, work: (i: number) => Promise<T>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallelism }, async () => {
      while (next < count) await work(next++);
    }),
  );
}

describe('the local database', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  });
  const track = <T extends ServerProcess | TestServer>(server: T): T => {
    cleanups.push(() => ('child' in server ? server.kill('SIGKILL') : server.close()));
    return server;
  };
  const dir = async () => {
    const created = await tempDir();
    cleanups.push(() => fsp.rm(created, { recursive: true, force: true }));
    return created;
  };

  it('answers every Idempotency-Key with one execution, run once, after a kill -9 in the middle of 300 submissions', async () => {
    const dataDir = await dir();
    const ran = path.join(await dir(), 'ran.txt');
    const keys = Array.from({ length: 300 }, (_, i) => `key-${String(i).padStart(3, '0')}`);
    const seen = new Map<string, Set<string>>();
    const record = (key: string, id: string) => seen.set(key, (seen.get(key) ?? new Set()).add(id));

    const first = track(await spawnServer(processEnv(dataDir)));
    let answered = 0;
    let cutOff = 0;
    let killing: Promise<void> | undefined;
    await pool(keys.length, 16, async (i) => {
      const key = keys[i] ?? '';
      const sentBeforeKill = killing === undefined;
      try {
        const reply = await post(first.url, '/v1/jobs', appendJob(key, ran), key);
        if (reply.status === 202) record(key, reply.body.id);
        if (++answered === 100) killing = first.kill('SIGKILL');
      } catch {
        // The server died with this request in flight: the client saw no answer.
        if (sentBeforeKill) cutOff++;
      }
    });
    await killing;
    expect(answered).toBeGreaterThanOrEqual(100);
    expect(answered).toBeLessThan(300);
    // The kill landed mid-stream: requests sent before it got no answer.
    expect(cutOff).toBeGreaterThan(0);

    const second = track(await spawnServer(processEnv(dataDir)));
    await pool(keys.length, 16, async (i) => {
      const key = keys[i] ?? '';
      const reply = await post(second.url, '/v1/jobs', appendJob(key, ran), key);
      expect(reply.status, `${key}: ${JSON.stringify(reply.body)}`).toBe(202);
      record(key, reply.body.id);
    });
    for (const key of keys) expect(seen.get(key)?.size, key).toBe(1);

    const ids = keys.map((key) => [...(seen.get(key) ?? [])][0] ?? '');
    await pool(ids.length, 16, async (i) => waitDone(second.client, ids[i] ?? '', 120));
    const listed = await listAll(second.url);
    expect(listed.map((e) => e.id).sort()).toEqual([...ids].sort());

    const lines = (await fsp.readFile(ran, 'utf8')).trim().split('\n');
    const runs = new Map<string, number>();
    for (const line of lines) runs.set(line, (runs.get(line) ?? 0) + 1);
    const ranTwice = [...runs].filter(([, n]) => n > 1);
    expect(ranTwice).toEqual([]);
    // Every job ran, except one the crash caught between its directory and its process (if any).
    const neverRan = keys.filter((key) => !runs.has(key));
    const abandoned = listed.filter((e) => e.reason?.includes('stopped while launching'));
    expect(neverRan.length).toBeLessThanOrEqual(abandoned.length);
  }, 240_000);

  it('refuses to start on a byte flipped inside a record, naming the file, and loses nothing once it is restored', async () => {
    const dataDir = await dir();
    const server = track(await startServer(processEnv(dataDir)));
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(
        (await post(server.url, '/v1/bids', { image: 'busybox', command: ['echo', `marker-${i}`] })).body
          .executionId,
      );
    }
    await server.close();
    cleanups.pop();

    const file = path.join(dataDir, 'ferry.db');
    const bytes = await fsp.readFile(file);
    const at = bytes.indexOf('marker-3');
    expect(at).toBeGreaterThan(0);
    expect(bytes.indexOf('marker-3', at + 1)).toBe(-1);
    const original = bytes[at] ?? 0;
    bytes[at] = 'n'.charCodeAt(0); // still valid JSON: only the digest can tell
    await fsp.writeFile(file, bytes);

    const refused = await refusedStart(processEnv(dataDir));
    expect(refused.code).not.toBe(0);
    expect(refused.lines, refused.lines.join('\n')).toHaveLength(1);
    expect(refused.lines[0]).toContain(file);
    expect(refused.lines[0]).toMatch(/damaged.*(backup|aside)/);

    bytes[at] = original;
    await fsp.writeFile(file, bytes);
    const restored = track(await startServer(processEnv(dataDir)));
    expect((await listAll(restored.url)).map((e) => e.id).sort()).toEqual([...ids].sort());
  });

  it('refuses to start on a damaged b-tree page, naming the file, and loses nothing once it is restored', async () => {
    const dataDir = await dir();
    const server = track(await startServer(processEnv(dataDir)));
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      ids.push(
        (await post(server.url, '/v1/bids', { image: 'busybox', command: ['true'] })).body.executionId,
      );
    }
    await server.close();
    cleanups.pop();

    const file = path.join(dataDir, 'ferry.db');
    const inspect = new Database(file, { readonly: true });
    const { rootpage } = inspect
      .prepare("SELECT rootpage FROM sqlite_master WHERE name = 'executions'")
      .get() as {
      rootpage: number;
    };
    const pageSize = inspect.pragma('page_size', { simple: true }) as number;
    inspect.close();
    const bytes = await fsp.readFile(file);
    const at = (rootpage - 1) * pageSize; // the page's type byte
    const original = bytes[at] ?? 0;
    bytes[at] = 0xff;
    await fsp.writeFile(file, bytes);

    const refused = await refusedStart(processEnv(dataDir));
    expect(refused.code).not.toBe(0);
    expect(refused.lines, refused.lines.join('\n')).toHaveLength(1);
    expect(refused.lines[0]).toContain(file);
    expect(refused.lines[0]).toMatch(/damaged.*(backup|aside)/);
    expect(fs.statSync(file).size).toBe(bytes.length);

    bytes[at] = original;
    await fsp.writeFile(file, bytes);
    const restored = track(await startServer(processEnv(dataDir)));
    expect((await listAll(restored.url)).map((e) => e.id).sort()).toEqual([...ids].sort());
  });

  it('answers 5xx while the data directory cannot be written, creates nothing, and runs nothing later', async () => {
    const dataDir = await dir();
    const ran = path.join(await dir(), 'ran.txt');
    const server = track(await startServer(processEnv(dataDir)));
    const before = await post(server.url, '/v1/jobs', appendJob('before', ran));
    expect(before.status).toBe(202);
    await waitDone(server.client, before.body.id);

    // Tests run as root, so permissions do not stop writes; the immutable flag does, even
    // through files the server already holds open.
    const frozen = [
      dataDir,
      ...fs
        .readdirSync(dataDir)
        .filter((f) => f.startsWith('ferry.db'))
        .map((f) => path.join(dataDir, f)),
    ];
    const chattr = (flag: string) => {
      const result = spawnSync('chattr', [flag, ...frozen], { encoding: 'utf8' });
      if (result.status !== 0) throw new Error(`chattr ${flag} failed: ${result.stderr}`);
    };
    chattr('+i');
    cleanups.push(async () => chattr('-i'));
    const refused = [
      await post(server.url, '/v1/jobs', appendJob('during-1', ran)),
      await post(server.url, '/v1/jobs', appendJob('during-2', ran), 'key-during'),
      await post(server.url, '/v1/bids', appendJob('during-3', ran)),
    ];
    chattr('-i');

    for (const reply of refused) {
      expect(reply.status).toBe(503);
      expect(reply.type).toContain('application/problem+json');
      expect(reply.body.detail).toMatch(/data directory cannot be written/);
      expect(reply.body.detail).not.toContain(dataDir);
    }
    expect((await listAll(server.url)).map((e) => e.id)).toEqual([before.body.id]);
    await new Promise((resolve) => setTimeout(resolve, 2_000)); // a few sweeps and dispatch rounds
    await server.close();
    cleanups.pop();
    const restarted = track(await startServer(processEnv(dataDir)));
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect((await listAll(restarted.url)).map((e) => e.id)).toEqual([before.body.id]);
    expect((await fsp.readFile(ran, 'utf8')).trim().split('\n')).toEqual(['before']);
    // Writable again: the same key now runs its request once.
    const after = await post(restarted.url, '/v1/jobs', appendJob('after', ran), 'key-during');
    expect(after.status).toBe(202);
  });

  it('refuses a second server on the same data directory, and the first keeps serving', async () => {
    const dataDir = await dir();
    const first = track(await spawnServer(processEnv(dataDir)));
    const refused = await refusedStart(processEnv(dataDir));
    expect(refused.code).not.toBe(0);
    expect(refused.lines, refused.lines.join('\n')).toHaveLength(1);
    expect(refused.lines[0]).toContain(dataDir);
    expect(refused.lines[0]).toContain('FERRY_DATA_DIR');

    const bid = await post(first.url, '/v1/bids', { image: 'busybox', command: ['true'] });
    expect(bid.status).toBe(201);
    expect((await listAll(first.url)).map((e) => e.id)).toEqual([bid.body.executionId]);
  });

  it('imports a data directory of the older journal store once, with every execution intact', async () => {
    const dataDir = await dir();
    await fsp.cp(FIXTURE, dataDir, { recursive: true });
    const journal = (await fsp.readFile(path.join(dataDir, 'executions.jsonl'), 'utf8')).trim().split('\n');
    const expected = new Map<string, unknown>();
    for (const line of journal) {
      const { k, v } = JSON.parse(line) as { k: string; v: unknown };
      expected.set(k, v);
    }

    const server = track(await startServer(processEnv(dataDir)));
    const listed = await listAll(server.url);
    expect(new Map(listed.map((e) => [e.id, e]))).toEqual(expected);
    expect(fs.existsSync(path.join(dataDir, 'executions.jsonl'))).toBe(false);
    expect(fs.existsSync(path.join(dataDir, 'executions.jsonl.migrated'))).toBe(true);
    await server.close();
    cleanups.pop();

    const again = track(await startServer(processEnv(dataDir)));
    expect((await listAll(again.url)).length).toBe(expected.size);
  });

  it('refuses to import a journal with a damaged line, naming the file and the line', async () => {
    const dataDir = await dir();
    await fsp.cp(FIXTURE, dataDir, { recursive: true });
    const file = path.join(dataDir, 'executions.jsonl');
    const lines = (await fsp.readFile(file, 'utf8')).split('\n');
    lines[1] = (lines[1] ?? '').slice(0, 40);
    await fsp.writeFile(file, lines.join('\n'));

    const refused = await refusedStart(processEnv(dataDir));
    expect(refused.code).not.toBe(0);
    expect(refused.lines, refused.lines.join('\n')).toHaveLength(1);
    expect(refused.lines[0]).toContain(`${file}: line 2 is damaged`);
    expect(fs.existsSync(file)).toBe(true);
  });
});
