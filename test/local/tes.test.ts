// The GA4GH TES 1.1 API on a local server with the Docker backend, driven by py-tes, the standard
// Python client: it parses every answer against TES 1.1 (an unknown field or state is an error
// there), so each call it makes is also a check of the shape. The filters py-tes cannot send
// (name_prefix, state, tag_key/tag_value) are asked for over plain HTTP.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { FerryClient } from '../../cli/client.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import { removeContainersOf } from '../support/docker.ts';
import { startServer, type TestServer, tempDir } from '../support/server.ts';
import { expectTesShape } from '../support/tes-schema.ts';

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
/** A directory of this machine tasks read inputs from (in/) and deliver outputs to (out/). */
let exchange: string | undefined;

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
    exchange = await tempDir('ferry-tes-files-');
    await fsp.mkdir(path.join(exchange, 'in', 'refs'), { recursive: true });
    await fsp.mkdir(path.join(exchange, 'out'));
    await fsp.writeFile(path.join(exchange, 'in', 'sample.txt'), 'alpha\nbeta\n');
    await fsp.writeFile(path.join(exchange, 'in', 'refs', 'r1.txt'), 'ref one\n');
    server = await startServer({
      FERRY_BACKEND: 'docker',
      FERRY_TOKEN: TOKEN,
      FERRY_INPUT_ALLOW: `file://${exchange}/in/`,
      FERRY_OUTPUT_ALLOW: `file://${exchange}/out/`,
    });
  }, 60_000);
  afterAll(async () => {
    await server?.close();
    await removeContainersOf(created);
    if (exchange !== undefined) await fsp.rm(exchange, { recursive: true, force: true });
  });

  it('answers service-info as a TES 1.1 service', async () => {
    const info = await one({ call: 'service_info' });
    expect(info).toMatchObject({
      id: 'ferry.tes',
      name: 'Ferry',
      type: { group: 'org.ga4gh', artifact: 'tes', version: '1.1.0' },
      organization: { name: 'Ferry', url: `${server.url}/` },
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

  it('fetches file:// inputs and delivers outputs to their url before the task is COMPLETE', async () => {
    const dir = exchange ?? '';
    const id = await create({
      executors: [
        {
          image,
          command: [
            'sh',
            '-c',
            'mkdir -p /out/tables && wc -l < /in/sample.txt > /out/count.txt && cp /in/refs/r1.txt /out/tables/a.txt && echo b > /out/tables/b.txt',
          ],
        },
      ],
      inputs: [
        { url: `file://${dir}/in/sample.txt`, path: '/in/sample.txt' },
        { url: `file://${dir}/in/refs`, path: '/in/refs', type: 'DIRECTORY' },
      ],
      outputs: [
        { url: `file://${dir}/out/run1/count.txt`, path: '/out/count.txt' },
        { url: `file://${dir}/out/run1/tables`, path: '/out/tables', type: 'DIRECTORY' },
      ],
    });
    expect((await waitEnded(id)).state).toBe('COMPLETE');
    // Delivered by the time the task is COMPLETE.
    expect(await fsp.readFile(path.join(dir, 'out/run1/count.txt'), 'utf8')).toBe('2\n');
    expect(await fsp.readFile(path.join(dir, 'out/run1/tables/a.txt'), 'utf8')).toBe('ref one\n');
    expect(await fsp.readFile(path.join(dir, 'out/run1/tables/b.txt'), 'utf8')).toBe('b\n');
    const basic = await one({ call: 'get', id, view: 'BASIC' });
    expect(basic.outputs).toEqual([
      expect.objectContaining({ url: `file://${dir}/out/run1/count.txt`, path: '/out/count.txt' }),
      expect.objectContaining({
        url: `file://${dir}/out/run1/tables`,
        path: '/out/tables',
        type: 'DIRECTORY',
      }),
    ]);
    // Every file delivered, with its size (py-tes reads TES's text sizes as numbers).
    const [log] = basic.logs as (TaskLogView & { outputs: unknown[] })[];
    expect(log?.outputs).toEqual([
      { url: `file://${dir}/out/run1/count.txt`, path: '/out/count.txt', size_bytes: 2 },
      { url: `file://${dir}/out/run1/tables/a.txt`, path: '/out/tables/a.txt', size_bytes: 8 },
      { url: `file://${dir}/out/run1/tables/b.txt`, path: '/out/tables/b.txt', size_bytes: 2 },
    ]);
  }, 180_000);

  it('fails a task whose output cannot be delivered, and declines a destination not allowed', async () => {
    const dir = exchange ?? '';
    const [outside] = await pyTes([
      {
        call: 'create',
        task: {
          executors: [{ image, command: ['true'] }],
          outputs: [{ url: `file://${dir}/in/stolen.txt`, path: '/out/x.txt' }],
        },
      },
    ]);
    expect(outside?.status).toBe(400);
    expect(JSON.parse(outside?.body ?? '{}').detail).toContain(
      `output /out/x.txt: file://${dir}/in/stolen.txt is not an allowed destination; FERRY_OUTPUT_ALLOW allows file://${dir}/out/`,
    );
    // Nothing at the path: the executor succeeded, the task did not.
    const id = await create({
      executors: [{ image, command: ['true'] }],
      outputs: [{ url: `file://${dir}/out/never.txt`, path: '/out/never.txt' }],
    });
    expect((await waitEnded(id)).state).toBe('SYSTEM_ERROR');
    const full = await one({ call: 'get', id, view: 'FULL' });
    expect((full.logs as TaskLogView[])[0]?.system_logs?.[0]).toBe(
      `output never.txt was not delivered: nothing was at /out/never.txt to deliver to file://${dir}/out/never.txt`,
    );
    expect(fs.existsSync(path.join(dir, 'out/never.txt'))).toBe(false);
    // A task that fails delivers nothing, though its output is there.
    const failing = await create({
      executors: [{ image, command: ['sh', '-c', 'echo partial > /out/half.txt; exit 1'] }],
      outputs: [{ url: `file://${dir}/out/half.txt`, path: '/out/half.txt' }],
    });
    expect((await waitEnded(failing)).state).toBe('EXECUTOR_ERROR');
    expect(fs.existsSync(path.join(dir, 'out/half.txt'))).toBe(false);
  }, 180_000);

  it('runs two executors one after the other, sharing a volume', async () => {
    const id = await create({
      name: 'two-steps',
      executors: [
        { image, command: ['sh', '-c', 'echo step one; echo shared-by-one > /shared/note.txt'] },
        { image, command: ['sh', '-c', 'echo step two read $(cat /shared/note.txt); echo done >&2'] },
      ],
      volumes: ['/shared'],
    });
    expect((await waitEnded(id)).state).toBe('COMPLETE');
    const basic = await one({ call: 'get', id, view: 'BASIC' });
    expect(basic.volumes).toEqual(['/shared']);
    expect((basic.executors as unknown[]).length).toBe(2);
    const full = await one({ call: 'get', id, view: 'FULL' });
    const [log] = full.logs as TaskLogView[];
    expect(log?.logs).toEqual([
      expect.objectContaining({ exit_code: 0, stdout: 'step one\n', stderr: '' }),
      expect.objectContaining({ exit_code: 0, stdout: 'step two read shared-by-one\n', stderr: 'done\n' }),
    ]);
    // Each executor's log has its own times, the second after the first.
    const [first, second] = (log?.logs ?? []) as unknown as { start_time: string; end_time: string }[];
    expect(Date.parse(second?.start_time ?? '')).toBeGreaterThanOrEqual(Date.parse(first?.end_time ?? ''));
    // Through /v1 it is one job with steps, its output the steps' one after the other.
    const result = (
      await v1().json<{ manifest: { steps: unknown[]; stdout: { inline: string } } }>(
        'GET',
        `/v1/executions/${id}/result`,
      )
    ).body;
    expect(result.manifest.steps).toHaveLength(2);
    expect(result.manifest.stdout.inline).toBe('step one\nstep two read shared-by-one\n');
  }, 180_000);

  it('stops at the first failing executor unless it ignores errors', async () => {
    const stopped = await create({
      executors: [
        { image, command: ['sh', '-c', 'echo first fails >&2; exit 3'] },
        { image, command: ['sh', '-c', 'echo never printed'] },
      ],
    });
    const goesOn = await create({
      executors: [
        { image, command: ['sh', '-c', 'exit 4'], ignore_error: true },
        { image, command: ['sh', '-c', 'echo second ran'] },
      ],
    });
    expect((await waitEnded(stopped)).state).toBe('EXECUTOR_ERROR');
    const stoppedLogs = ((await one({ call: 'get', id: stopped, view: 'FULL' })).logs as TaskLogView[])[0]
      ?.logs;
    expect(stoppedLogs).toEqual([
      expect.objectContaining({ exit_code: 3, stdout: '', stderr: 'first fails\n' }),
    ]);

    expect((await waitEnded(goesOn)).state).toBe('COMPLETE');
    const goesOnLogs = ((await one({ call: 'get', id: goesOn, view: 'FULL' })).logs as TaskLogView[])[0]
      ?.logs;
    expect(goesOnLogs).toEqual([
      expect.objectContaining({ exit_code: 4, stdout: '' }),
      expect.objectContaining({ exit_code: 0, stdout: 'second ran\n' }),
    ]);
    const execution = (await v1().json<Execution>('GET', `/v1/executions/${goesOn}`)).body;
    expect(execution).toMatchObject({ state: 'COMPLETED', exitCode: 0 });
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

  it('answers every route in the shape of the official TES 1.1 schema', async () => {
    const raw = async (method: string, route: string, body?: object) => {
      const response = await fetch(`${server.url}/ga4gh/tes/v1${route}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      expect(response.status).toBe(200);
      return (await response.json()) as unknown;
    };
    expectTesShape('tesServiceInfo', await raw('GET', '/service-info'));
    const createdTask = await raw('POST', '/tasks', {
      executors: [
        { image, command: ['sh', '-c', 'echo one; cp /in/a.txt /scratch/a.txt'] },
        { image, command: ['sh', '-c', 'echo two; exit 5'], ignore_error: true },
      ],
      inputs: [{ path: '/in/a.txt', content: 'a' }],
      outputs: [{ url: `file://${exchange}/out/official/a.txt`, path: '/scratch/a.txt' }],
      volumes: ['/scratch'],
      tags: { suite: 'official-schema' },
    });
    expectTesShape('tesCreateTaskResponse', createdTask);
    const { id } = createdTask as { id: string };
    created.push(id);
    expect((await waitEnded(id)).state).toBe('COMPLETE');
    expectTesShape('tesTask', await raw('GET', `/tasks/${id}`), { view: 'MINIMAL' });
    const basic = (await raw('GET', `/tasks/${id}?view=BASIC`)) as { logs: { outputs: unknown[] }[] };
    // TES gives sizes as text.
    expect(basic.logs[0]?.outputs).toEqual([
      { url: `file://${exchange}/out/official/a.txt`, path: '/scratch/a.txt', size_bytes: '1' },
    ]);
    for (const view of ['MINIMAL', 'BASIC', 'FULL'] as const) {
      expectTesShape('tesTask', await raw('GET', `/tasks/${id}?view=${view}`), { view });
      expectTesShape('tesListTasksResponse', await raw('GET', `/tasks?view=${view}&page_size=3`), { view });
    }
    const running = await create({ executors: [{ image, command: ['sleep', '30'] }] });
    expectTesShape('tesCancelTaskResponse', await raw('POST', `/tasks/${running}:cancel`));
  }, 180_000);

  it('refuses a caller without the token', async () => {
    const response = await fetch(`${server.url}/ga4gh/tes/v1/tasks`);
    expect(response.status).toBe(401);
  });
});
