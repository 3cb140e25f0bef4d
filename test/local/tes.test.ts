// The GA4GH TES 1.1 API on a local server with the Docker backend, driven by py-tes, the standard
// Python client: it parses every answer against TES 1.1 (an unknown field or state is an error
// there), so each call it makes is also a check of the shape. The filters py-tes cannot send
// (name_prefix, state, tag_key/tag_value) are asked for over plain HTTP.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { FerryClient } from '../../cli/client.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import { removeContainersOf } from '../support/docker.ts';
import { startServer, type TestServer } from '../support/server.ts';

const dockerAvailable = inject('dockerAvailable');
const image = inject('testImage');
const PYTHON = path.resolve('.venv/bin/python');
const TOKEN = 'tes-test-token-0123456789';
if (process.env.CI === 'true' && (!dockerAvailable || !fs.existsSync(PYTHON))) {
  throw new Error('CI=true but Docker or .venv (py-tes, from test/local/requirements.txt) is missing');
}

interface TaskLogView {
  readonly logs: { exit_code: number; stdout?: string; stderr?: string }[];
  readonly start_time?: string;
  readonly end_time?: string;
  readonly system_logs?: string[];
}
interface ListBody {
  readonly tasks: { id: string; state?: string }[];
  readonly next_page_token?: string;
}

type Answer = {
  ok?: Record<string, unknown> & { id?: string };
  error?: string;
  status?: number;
  body?: string;
};

let server: TestServer;

/** Runs the calls through py-tes, in one Python process, and gives its answers in order. */
async function pyTes(calls: object[]): Promise<Answer[]> {
  const child = spawn(PYTHON, [path.resolve('test/local/tes_client.py'), server.url, TOKEN], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    err += chunk.toString();
  });
  child.stdin.end(JSON.stringify(calls));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`tes_client.py exited ${code}: ${err}`);
  return out
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Answer);
}

/** Ferry's own API, with the same token. */
const v1 = () => new FerryClient(server.url, TOKEN);

const one = async (call: object): Promise<Record<string, unknown>> => {
  const [answer] = await pyTes([call]);
  if (answer?.ok === undefined) throw new Error(`py-tes: ${JSON.stringify(answer)}`);
  return answer.ok;
};

/** A plain HTTP call to the TES API, for what py-tes does not send. */
async function tes(
  method: string,
  route: string,
  body?: object,
): Promise<{ status: number; body: ListBody }> {
  const response = await fetch(`${server.url}/ga4gh/tes/v1${route}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as ListBody };
}

const created: string[] = [];
const create = async (task: object): Promise<string> => {
  const { id } = await one({ call: 'create', task });
  if (typeof id !== 'string') throw new Error('no id');
  created.push(id);
  return id;
};
const waitEnded = (id: string) => one({ call: 'wait', id, timeout: 120 });

describe.skipIf(!dockerAvailable)('the TES API, through py-tes, on the Docker backend', () => {
  beforeAll(async () => {
    server = await startServer({ FERRY_BACKEND: 'docker', FERRY_TOKEN: TOKEN });
  }, 60_000);
  afterAll(async () => {
    await server?.close();
    await removeContainersOf(created);
  });

  it('answers service-info as a TES 1.1 service', async () => {
    const info = await one({ call: 'service_info' });
    expect(info).toMatchObject({
      id: 'ferry.tes',
      name: 'Ferry',
      type: { group: 'org.ga4gh', artifact: 'tes', version: '1.1.0' },
      organization: { name: 'Ferry' },
    });
  });

  it('creates a task, runs it, and shows it in every view', async () => {
    const id = await create({
      name: 'greet',
      description: 'prints its input',
      executors: [{ image, command: ['sh', '-c', 'cat /in/greeting.txt; echo to stderr >&2'] }],
      inputs: [{ path: '/in/greeting.txt', content: 'hello from TES\n' }],
      resources: { cpu_cores: 1, ram_gb: 0.5 },
      tags: { project: 'tes-test', step: 'greet' },
    });
    expect(id).toMatch(/^ex_/);
    expect((await waitEnded(id)).state).toBe('COMPLETE');

    const minimal = await one({ call: 'get', id, view: 'MINIMAL' });
    expect(minimal).toEqual({ id, state: 'COMPLETE' });

    const basic = await one({ call: 'get', id, view: 'BASIC' });
    expect(basic).toMatchObject({
      id,
      state: 'COMPLETE',
      name: 'greet',
      description: 'prints its input',
      executors: [{ image, command: ['sh', '-c', 'cat /in/greeting.txt; echo to stderr >&2'] }],
      inputs: [{ path: '/in/greeting.txt', type: 'FILE' }],
      tags: { project: 'tes-test', step: 'greet' },
      resources: { cpu_cores: 1 },
    });
    // BASIC leaves out the input's content, the executor's output and the system logs.
    expect((basic.inputs as Record<string, unknown>[])[0]?.content).toBeUndefined();
    const [basicLog] = basic.logs as TaskLogView[];
    expect(basicLog?.logs[0]).toMatchObject({ exit_code: 0 });
    expect(basicLog?.logs[0]?.stdout).toBeUndefined();
    expect(basicLog?.system_logs).toBeUndefined();
    expect(typeof basic.creation_time).toBe('string');

    const full = await one({ call: 'get', id, view: 'FULL' });
    expect((full.inputs as Record<string, unknown>[])[0]?.content).toBe('hello from TES\n');
    const [fullLog] = full.logs as TaskLogView[];
    expect(fullLog?.logs[0]).toMatchObject({
      exit_code: 0,
      stdout: 'hello from TES\n',
      stderr: 'to stderr\n',
    });
    expect(Date.parse(fullLog?.start_time ?? '')).toBeLessThanOrEqual(Date.parse(fullLog?.end_time ?? ''));

    // The same execution through Ferry's own API.
    const execution = (await v1().json<Execution>('GET', `/v1/executions/${id}`)).body;
    expect(execution).toMatchObject({ state: 'COMPLETED', exitCode: 0, spec: { name: 'greet' } });
  }, 180_000);

  it('reports a failing executor as EXECUTOR_ERROR with its exit code', async () => {
    const id = await create({ executors: [{ image, command: ['sh', '-c', 'echo broken >&2; exit 3'] }] });
    expect((await waitEnded(id)).state).toBe('EXECUTOR_ERROR');
    const full = await one({ call: 'get', id, view: 'FULL' });
    expect((full.logs as TaskLogView[])[0]?.logs[0]).toMatchObject({
      exit_code: 3,
      stderr: 'broken\n',
    });
  }, 180_000);

  it('cancels a running task', async () => {
    const id = await create({ executors: [{ image, command: ['sleep', '60'] }] });
    const deadline = Date.now() + 60_000;
    while ((await one({ call: 'get', id, view: 'MINIMAL' })).state !== 'RUNNING') {
      if (Date.now() > deadline) throw new Error('never RUNNING');
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(await one({ call: 'cancel', id })).toEqual({});
    // CANCELING while the container stops, then CANCELED.
    const states = new Set<unknown>();
    for (const end = Date.now() + 60_000; Date.now() < end; ) {
      const { state } = await one({ call: 'get', id, view: 'MINIMAL' });
      states.add(state);
      if (state === 'CANCELED') break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect([...states].at(-1)).toBe('CANCELED');
    expect([...states].every((s) => s === 'CANCELING' || s === 'CANCELED')).toBe(true);
  }, 180_000);

  it('refuses a task Ferry will not run with 400, the reason in the body', async () => {
    const [declined, unsupported] = await pyTes([
      { call: 'create', task: { executors: [{ image, command: ['true'] }], resources: { cpu_cores: 64 } } },
      {
        call: 'create',
        task: {
          executors: [{ image, command: ['true'] }],
          resources: { backend_parameters: { queue: 'fast' }, backend_parameters_strict: true },
        },
      },
    ]);
    expect(declined?.status).toBe(400);
    expect(JSON.parse(declined?.body ?? '{}').detail).toMatch(
      /^Ferry will not run this job: cpu 64 vCPU asked, this host offers at most \d+ vCPU/,
    );
    expect(unsupported?.status).toBe(400);
    expect(JSON.parse(unsupported?.body ?? '{}').detail).toContain(
      'resources.backend_parameters: backend_parameters queue: Ferry supports none (backend_parameters_strict)',
    );
    // Not strict: the task runs, the parameter ignored.
    const id = await create({
      executors: [{ image, command: ['true'] }],
      resources: { backend_parameters: { queue: 'fast' } },
    });
    expect((await waitEnded(id)).state).toBe('COMPLETE');
  }, 180_000);

  it('lists page by page, and filters by name prefix, state and tags', async () => {
    const ids: string[] = [];
    for (const [i, tags] of [
      { batch: 'b1', kind: 'x' },
      { batch: 'b1', kind: 'y' },
      { batch: 'b1' },
    ].entries()) {
      ids.push(await create({ name: `listing-${i}`, executors: [{ image, command: ['true'] }], tags }));
    }
    for (const id of ids) await waitEnded(id);

    // Pages of two, newest first, until the token runs out; py-tes parses each.
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = await one({
        call: 'list',
        view: 'BASIC',
        page_size: 2,
        ...(token ? { page_token: token } : {}),
      });
      seen.push(...(page.tasks as { id: string }[]).map((t) => t.id));
      token = (page.next_page_token as string | null) ?? undefined;
      pages++;
    } while (token !== undefined && pages < 100);
    expect(seen.indexOf(ids[2] as string)).toBeLessThan(seen.indexOf(ids[0] as string));
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toEqual(expect.arrayContaining(created));

    const listed = async (query: string) =>
      ((await tes('GET', `/tasks?${query}`)).body.tasks as { id: string }[]).map((t) => t.id);
    expect(await listed('name_prefix=listing-')).toEqual([...ids].reverse());
    expect(await listed('name_prefix=listing-&tag_key=batch&tag_value=b1&tag_key=kind')).toEqual([
      ids[1],
      ids[0],
    ]);
    expect(await listed('name_prefix=listing-&tag_key=kind&tag_value=y')).toEqual([ids[1]]);
    expect(await listed('name_prefix=listing-&state=COMPLETE')).toEqual([...ids].reverse());
    expect(await listed('name_prefix=listing-&state=EXECUTOR_ERROR')).toEqual([]);
    const minimal = await tes('GET', '/tasks?name_prefix=listing-&page_size=1');
    expect(minimal.body.tasks).toEqual([{ id: ids[2], state: 'COMPLETE' }]);
    expect(typeof minimal.body.next_page_token).toBe('string');

    expect((await tes('GET', '/tasks?state=DONE')).status).toBe(400);
    expect((await tes('GET', '/tasks?view=EVERYTHING')).status).toBe(400);
    expect((await tes('GET', '/tasks?page_size=2048')).status).toBe(400);
  }, 180_000);

  it('shows a job submitted through /v1 as a TES task', async () => {
    const job = (
      await v1().json<Execution>('POST', '/v1/jobs', {
        image,
        command: ['sh', '-c', 'echo v1'],
        labels: { via: 'v1' },
      })
    ).body;
    created.push(job.id);
    expect((await waitEnded(job.id)).state).toBe('COMPLETE');
    const task = await one({ call: 'get', id: job.id, view: 'FULL' });
    expect(task).toMatchObject({
      id: job.id,
      tags: { via: 'v1' },
      executors: [{ command: ['sh', '-c', 'echo v1'] }],
    });
    expect((task.logs as TaskLogView[])[0]?.logs[0]).toMatchObject({ exit_code: 0, stdout: 'v1\n' });
  }, 180_000);

  it('refuses a caller without the token', async () => {
    const response = await fetch(`${server.url}/ga4gh/tes/v1/tasks`);
    expect(response.status).toBe(401);
  });
});
