// The HTTP API over real HTTP, on the process backend (no Docker needed): how it refuses bad
// input, the bid protocol, idempotency, ownership, listing, long polls and what a process
// job leaves behind. Every refusal must be a problem document and must create nothing.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Execution } from '../../shared/domain/execution.ts';
import { startServer, type TestServer } from '../support/server.ts';

const IMAGE = 'local/none:1';
const UNKNOWN_ID = `ex_${'0'.repeat(26)}`;

interface Reply {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  // biome-ignore lint/suspicious/noExplicitAny: replies are JSON of many shapes; tests look inside
  readonly body: any;
}

interface CallOptions {
  /** An object is sent as JSON; a string is sent as it is. */
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
  readonly token?: string;
}

let server: TestServer;

async function call(method: string, path: string, options: CallOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
    headers['content-type'] ??= 'application/json';
  }
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: response.status, headers: response.headers, text, body: parsed };
}

const job = (command: string[], extra: Record<string, unknown> = {}) => ({ image: IMAGE, command, ...extra });

/** Asserts an RFC 9457 problem with this status; returns it for further checks. */
function expectProblem(reply: Reply, status: number) {
  expect(reply.status, reply.text).toBe(status);
  expect(reply.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(reply.body).toMatchObject({ status, title: expect.any(String), detail: expect.any(String) });
  expect(reply.body.detail.length).toBeGreaterThan(0);
  return reply.body as { detail: string; errors?: { field: string; message: string }[] };
}

/** Asserts a 400 whose `errors[]` names `field`. */
function expectFieldError(reply: Reply, field: string) {
  const problem = expectProblem(reply, 400);
  expect(problem.errors?.map((e) => e.field)).toContain(field);
  return problem;
}

async function allExecutions(token?: string): Promise<Execution[]> {
  const items: Execution[] = [];
  let cursor: string | undefined;
  do {
    const reply = await call('GET', `/v1/executions?limit=500${cursor ? `&cursor=${cursor}` : ''}`, {
      ...(token === undefined ? {} : { token }),
    });
    expect(reply.status).toBe(200);
    items.push(...reply.body.items);
    cursor = reply.body.nextCursor;
  } while (cursor !== undefined);
  return items;
}

async function submitJob(spec: Record<string, unknown>, token?: string): Promise<Execution> {
  const reply = await call('POST', '/v1/jobs', { body: spec, ...(token === undefined ? {} : { token }) });
  expect(reply.status, reply.text).toBe(202);
  return reply.body as Execution;
}

async function askBid(spec: Record<string, unknown>, token?: string) {
  const reply = await call('POST', '/v1/bids', { body: spec, ...(token === undefined ? {} : { token }) });
  expect(reply.status, reply.text).toBe(201);
  return reply.body as { executionId: string; bid: Execution['bid']; execution: Execution };
}

/** Long-polls until the execution is terminal (or in `states`); fails after `seconds`. */
async function waitUntil(id: string, options: { states?: string[]; token?: string; seconds?: number } = {}) {
  const deadline = Date.now() + (options.seconds ?? 30) * 1000;
  const query = (options.states ?? []).map((s) => `&state=${s}`).join('');
  for (;;) {
    const reply = await call('GET', `/v1/executions/${id}/wait?timeoutSeconds=5${query}`, {
      ...(options.token === undefined ? {} : { token: options.token }),
    });
    expect(reply.status, reply.text).toBe(200);
    if (reply.headers.get('ferry-wait-done') === 'true') return reply.body as Execution;
    if (Date.now() > deadline) throw new Error(`execution ${id} still ${reply.body.state}`);
  }
}

async function logOf(id: string, stream: 'stdout' | 'stderr', token?: string): Promise<string> {
  const reply = await call('GET', `/v1/executions/${id}/logs?stream=${stream}`, {
    ...(token === undefined ? {} : { token }),
  });
  expect(reply.status).toBe(200);
  return reply.text;
}

/** Sends a body of `bytes` with raw node:http, optionally chunked, and reads whatever comes back. */
function sendLargeBody(
  bytes: number,
  chunked: boolean,
): Promise<{ status?: number; headers: http.IncomingHttpHeaders; text: string; error?: string }> {
  return new Promise((resolve) => {
    const url = new URL('/v1/jobs', server.url);
    const request = http.request(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(chunked ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(bytes) }),
      },
    });
    request.on('response', (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        text += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, text }));
      response.on('error', (error) => resolve({ headers: {}, text, error: error.message }));
    });
    request.on('error', (error) => resolve({ headers: {}, text: '', error: error.message }));
    const chunk = Buffer.alloc(64 * 1024, 'x');
    let sent = 0;
    const pump = () => {
      while (sent < bytes) {
        sent += chunk.length;
        if (!request.write(chunk)) {
          request.once('drain', pump);
          return;
        }
      }
      request.end();
    };
    pump();
  });
}

beforeAll(async () => {
  server = await startServer({ FERRY_BACKEND: 'process' });
});

afterAll(async () => {
  await server?.close();
});

describe('bad input is refused with a problem and creates no execution', () => {
  const token = 'bad-input-caller';
  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    call('POST', path, { body, headers, token });

  let before: number;
  beforeAll(async () => {
    before = (await allExecutions(token)).length;
  });
  afterAll(async () => {
    expect((await allExecutions(token)).length).toBe(before);
  });

  // [what, send it, status, the field errors[] names, what that field's message mentions]
  const cases: [string, () => Promise<Reply>, number, string?, string?][] = [
    ['malformed JSON', () => post('/v1/jobs', '{"image": "local/none:1", "command": ['), 400],
    ['a JSON array instead of an object', () => post('/v1/jobs', '[]'), 400, '(body)'],
    ['JSON null', () => post('/v1/jobs', 'null'), 400, '(body)'],
    [
      'a non-JSON content type',
      () => post('/v1/jobs', 'image=local/none:1', { 'content-type': 'text/plain' }),
      415,
    ],
    [
      'an empty body',
      () => call('POST', '/v1/jobs', { token, headers: { 'content-type': 'application/json' } }),
      400,
    ],
    ['a body of only whitespace', () => post('/v1/jobs', '   \n'), 400],
    [
      'an unknown top-level field',
      () => post('/v1/jobs', job(['echo'], { colour: 'red' })),
      400,
      'colour',
      'unknown field',
    ],
    [
      'an unknown nested field',
      () => post('/v1/jobs', job(['echo'], { resources: { cpu: 1, gpus: 1 } })),
      400,
      'resources.gpus',
      'unknown field',
    ],
    [
      'an unknown field in outputLimits',
      () => post('/v1/jobs', job(['echo'], { outputLimits: { maxBytes: 10 } })),
      400,
      'outputLimits.maxBytes',
      'unknown field',
    ],
    ['a missing image', () => post('/v1/jobs', { command: ['echo'] }), 400, 'image'],
    ['a missing command', () => post('/v1/jobs', { image: IMAGE }), 400, 'command'],
    [
      'an invalid image reference',
      () => post('/v1/jobs', job(['echo'], { image: 'Not An Image' })),
      400,
      'image',
    ],
    ['command as a string', () => post('/v1/jobs', { image: IMAGE, command: 'echo hi' }), 400, 'command'],
    [
      'command with a non-string argument',
      () => post('/v1/jobs', job(['echo', 1] as never)),
      400,
      'command.1',
    ],
    ['an empty command', () => post('/v1/jobs', job([])), 400, 'command'],
    ['an empty program name', () => post('/v1/jobs', job([''])), 400, 'command'],
    [
      'cpu as a word',
      () => post('/v1/jobs', job(['echo'], { resources: { cpu: 'lots' } })),
      400,
      'resources.cpu',
    ],
    ['negative cpu', () => post('/v1/jobs', job(['echo'], { resources: { cpu: -1 } })), 400, 'resources.cpu'],
    ['zero cpu', () => post('/v1/jobs', job(['echo'], { resources: { cpu: 0 } })), 400, 'resources.cpu'],
    [
      'cpu beyond any machine',
      () => post('/v1/jobs', job(['echo'], { resources: { cpu: 100_000 } })),
      400,
      'resources.cpu',
    ],
    [
      'memory that is not a size',
      () => post('/v1/jobs', job(['echo'], { resources: { memory: 'plenty' } })),
      400,
      'resources.memory',
    ],
    [
      'negative memory',
      () => post('/v1/jobs', job(['echo'], { resources: { memory: -512 } })),
      400,
      'resources.memory',
    ],
    ['env values as numbers', () => post('/v1/jobs', job(['echo'], { env: { N: 1 } })), 400, 'env.N'],
    ['env as a list', () => post('/v1/jobs', job(['echo'], { env: ['A=1'] })), 400, 'env'],
    [
      'a fractional timeout',
      () => post('/v1/jobs', job(['echo'], { timeoutSeconds: 1.5 })),
      400,
      'timeoutSeconds',
    ],
    ['an unknown network mode', () => post('/v1/jobs', job(['echo'], { network: 'host' })), 400, 'network'],
    [
      'a bid with an unknown field',
      () => post('/v1/bids', job(['echo'], { urgent: true })),
      400,
      'urgent',
      'unknown field',
    ],
    ['a bid with an empty command', () => post('/v1/bids', job([])), 400, 'command'],
    ['a body on accept', () => post(`/v1/bids/${UNKNOWN_ID}/accept`, { really: true }), 400],
  ];

  test.each(cases)('%s', async (_name, send, status, field, mentions) => {
    const reply = await send();

    const problem = expectProblem(reply, status);
    if (field !== undefined) expect(problem.errors?.map((e) => e.field)).toContain(field);
    if (mentions !== undefined) {
      expect(problem.errors?.find((e) => e.field === field)?.message).toContain(mentions);
      expect(problem.detail).toContain(mentions);
    }
  });

  test('every field problem is reported in one answer, each named', async () => {
    const reply = await post('/v1/jobs', { image: 'BAD', command: 'x', resources: { cpu: 'lots', gpus: 1 } });

    const problem = expectProblem(reply, 400);
    expect(problem.errors?.map((e) => e.field).sort()).toEqual([
      'command',
      'image',
      'resources.cpu',
      'resources.gpus',
    ]);
    expect(problem.errors).toContainEqual({ field: 'resources.gpus', message: 'unknown field' });
    expect(problem.detail).toContain('invalid job spec');
  });

  test('a body of 10 MB with a declared length is refused with 413 and the connection closed', async () => {
    const reply = await sendLargeBody(10 * 1024 * 1024, false);

    expect(reply.error).toBeUndefined();
    expect(reply.status).toBe(413);
    expect(reply.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(reply.headers.connection).toBe('close');
    expect(JSON.parse(reply.text)).toMatchObject({ status: 413, title: 'Content Too Large' });
    expect((await call('GET', '/v1/node', { token })).status).toBe(200);
  });

  test('a chunked body of 10 MB is cut off with 413 and the server carries on', async () => {
    const reply = await sendLargeBody(10 * 1024 * 1024, true);

    // The server stops reading at the limit; the client may see the 413 or, while still
    // writing, a reset. Either way the server must stay up and create nothing.
    if (reply.error === undefined) {
      expect(reply.status).toBe(413);
      expect(JSON.parse(reply.text)).toMatchObject({ status: 413 });
    } else {
      expect(reply.error).toMatch(/EPIPE|ECONNRESET|socket hang up/);
    }
    expect((await call('GET', '/v1/node', { token })).status).toBe(200);
  });

  test('a 10 MB body through fetch gets a 413 problem', async () => {
    const reply = await post('/v1/jobs', JSON.stringify(job(['echo', 'x'.repeat(10 * 1024 * 1024)])));

    expectProblem(reply, 413);
    expect((await call('GET', '/healthz')).text).toBe('ok\n');
  });
});

describe('ids, query parameters and routes are checked', () => {
  test.each([
    ['GET', '/v1/executions/nope'],
    ['GET', '/v1/executions/ex_tooshort'],
    ['GET', `/v1/executions/ex_${'A'.repeat(26)}`],
    ['GET', `/v1/executions/${UNKNOWN_ID}0`],
    ['GET', '/v1/executions/nope/wait'],
    ['GET', '/v1/executions/nope/logs'],
    ['GET', '/v1/executions/nope/result'],
    ['POST', '/v1/executions/nope/cancel'],
    ['POST', '/v1/bids/nope/accept'],
    ['POST', '/v1/bids/nope/reject'],
  ])('a malformed id is a 400 naming the id: %s %s', async (method, path) => {
    const reply = await call(method, path);

    expectFieldError(reply, 'id');
  });

  test.each([
    ['GET', `/v1/executions/${UNKNOWN_ID}`],
    ['GET', `/v1/executions/${UNKNOWN_ID}/wait?timeoutSeconds=0`],
    ['GET', `/v1/executions/${UNKNOWN_ID}/logs`],
    ['GET', `/v1/executions/${UNKNOWN_ID}/result`],
    ['POST', `/v1/executions/${UNKNOWN_ID}/cancel`],
    ['POST', `/v1/bids/${UNKNOWN_ID}/accept`],
    ['POST', `/v1/bids/${UNKNOWN_ID}/reject`],
  ])('a well-formed unknown id is a 404: %s %s', async (method, path) => {
    const reply = await call(method, path);

    const problem = expectProblem(reply, 404);
    expect(problem.detail).toContain(UNKNOWN_ID);
  });

  test.each([
    ['?state=NOPE', 'state'],
    ['?state=COMPLETED&state=NOPE', 'state'],
    ['?state=completed', 'state'],
    ['?limit=0', 'limit'],
    ['?limit=501', 'limit'],
    ['?limit=x', 'limit'],
    ['?limit=1.5', 'limit'],
    ['?limit=-1', 'limit'],
    ['?cursor=not-a-cursor', 'cursor'],
    ['?cursor=eyJmb28iOjF9.AAAAAAAAAAAAAAAAAAAAAA', 'cursor'],
  ])('listing with %s is a 400 naming %s', async (query, field) => {
    const reply = await call('GET', `/v1/executions${query}`);

    expectFieldError(reply, field);
  });

  test('a cursor altered by the caller is refused', async () => {
    const token = 'cursor-forger';
    for (let i = 0; i < 3; i++) await askBid(job(['echo', String(i)]), token);
    const page = await call('GET', '/v1/executions?limit=1', { token });
    const [payload = '', signature = ''] = String(page.body.nextCursor).split('.');
    const forged = `${Buffer.from(JSON.stringify(['9999-01-01T00:00:00.000Z', UNKNOWN_ID])).toString('base64url')}.${signature}`;

    const reply = await call('GET', `/v1/executions?limit=1&cursor=${forged}`, { token });

    expect(payload).not.toBe('');
    expectFieldError(reply, 'cursor');
  });

  test.each([
    ['?timeoutSeconds=-1', 'timeoutSeconds'],
    ['?timeoutSeconds=soon', 'timeoutSeconds'],
    ['?timeoutSeconds=3601', 'timeoutSeconds'],
    ['?state=NOPE', 'state'],
  ])('waiting with %s is a 400 naming %s', async (query, field) => {
    const reply = await call('GET', `/v1/executions/${UNKNOWN_ID}/wait${query}`);

    expectFieldError(reply, field);
  });

  test.each([
    // `/` is the dashboard's page; other paths outside the API are not.
    ['GET', '/index'],
    ['GET', '/v1'],
    ['GET', '/v2/executions'],
    ['POST', '/v1/job'],
    ['GET', '/v1/executions/ex_x/unknown'],
  ])('an unknown route is a 404: %s %s', async (method, path) => {
    const reply = await call(method, path);

    const problem = expectProblem(reply, 404);
    expect(problem.detail).toContain(path);
  });

  test.each([
    ['GET', '/v1/jobs', 'POST'],
    ['DELETE', '/v1/executions', 'GET'],
    ['PUT', `/v1/executions/${UNKNOWN_ID}`, 'GET'],
    ['GET', `/v1/executions/${UNKNOWN_ID}/cancel`, 'POST'],
    ['GET', '/v1/bids', 'POST'],
    ['POST', '/v1/node', 'GET'],
  ])('a known route with the wrong method is a 405: %s %s', async (method, path, allowed) => {
    const reply = await call(method, path);

    const problem = expectProblem(reply, 405);
    expect(problem.detail).toContain(allowed);
  });
});

describe('the bid protocol', () => {
  test('a bid names the resolved constraints and an expiry, and creates an OFFERED execution', async () => {
    const reply = await askBid(job(['echo', 'hi'], { resources: { cpu: 0.5, memory: '256MiB' } }));

    expect(reply.bid).toMatchObject({
      accepted: true,
      reason: expect.stringContaining('process backend'),
      constraints: { platform: 'process', cpu: 0.5, memoryMiB: 256 },
      expiresAt: expect.any(String),
    });
    expect(reply.execution).toMatchObject({ id: reply.executionId, state: 'OFFERED' });
    expect((await call('GET', `/v1/executions/${reply.executionId}`)).body.state).toBe('OFFERED');
  });

  test('accepting a bid queues it (202) and the job then completes', async () => {
    const { executionId } = await askBid(job(['echo', 'accepted']));

    const accepted = await call('POST', `/v1/bids/${executionId}/accept`);

    expect(accepted.status).toBe(202);
    expect(accepted.body).toMatchObject({ id: executionId, state: 'QUEUED' });
    const done = await waitUntil(executionId);
    expect(done).toMatchObject({ state: 'COMPLETED', exitCode: 0 });
    expect(await logOf(executionId, 'stdout')).toBe('accepted\n');
  });

  test('rejecting a bid makes it BID_REJECTED; accepting it afterwards is a 409', async () => {
    const { executionId } = await askBid(job(['echo', 'rejected']));

    const rejected = await call('POST', `/v1/bids/${executionId}/reject`);
    const acceptedLater = await call('POST', `/v1/bids/${executionId}/accept`);
    const rejectedAgain = await call('POST', `/v1/bids/${executionId}/reject`);

    expect(rejected.status).toBe(200);
    expect(rejected.body).toMatchObject({ id: executionId, state: 'BID_REJECTED' });
    expect(expectProblem(acceptedLater, 409).detail).toContain('BID_REJECTED');
    expect(rejectedAgain.status).toBe(200);
    expect((await call('GET', `/v1/executions/${executionId}`)).body.state).toBe('BID_REJECTED');
  });

  test('rejecting an accepted bid is a 409', async () => {
    const { executionId } = await askBid(job(['sleep', '1']));
    await call('POST', `/v1/bids/${executionId}/accept`);

    const rejected = await call('POST', `/v1/bids/${executionId}/reject`);

    expectProblem(rejected, 409);
    expect((await waitUntil(executionId)).state).toBe('COMPLETED');
  });

  test('accepting twice is harmless, also once the job is running or done', async () => {
    const { executionId } = await askBid(job(['sleep', '1']));

    const first = await call('POST', `/v1/bids/${executionId}/accept`);
    const second = await call('POST', `/v1/bids/${executionId}/accept`);
    await waitUntil(executionId, { states: ['RUNNING'] });
    const whileRunning = await call('POST', `/v1/bids/${executionId}/accept`);
    const done = await waitUntil(executionId);
    const afterwards = await call('POST', `/v1/bids/${executionId}/accept`);

    expect(first.status).toBe(202);
    expect(second.status, second.text).toBe(202);
    expect(whileRunning.status, whileRunning.text).toBe(202);
    expect(afterwards.status, afterwards.text).toBe(202);
    expect(afterwards.body).toMatchObject({ id: executionId, state: 'COMPLETED' });
    expect(done.state).toBe('COMPLETED');
    expect(done.history.filter((h) => h.state === 'RUNNING')).toHaveLength(1);
  });

  test('a job too big for the host is declined via POST /v1/bids: 201 with accepted=false', async () => {
    const node = (await call('GET', '/v1/node')).body;

    const reply = await askBid(job(['echo'], { resources: { cpu: 1000 } }));

    expect(reply.bid.accepted).toBe(false);
    expect(reply.bid.reason).toContain('cpu 1000 vCPU asked');
    expect(reply.bid.reason).toContain(`at most ${node.perJobLimits.cpu} vCPU`);
    expect(reply.execution.state).toBe('DECLINED');
  });

  test('a job too big for the host via POST /v1/jobs is a 422 naming what was asked and what is possible', async () => {
    const node = (await call('GET', '/v1/node')).body;

    const reply = await call('POST', '/v1/jobs', { body: job(['echo'], { resources: { cpu: 1000 } }) });

    const problem = expectProblem(reply, 422);
    expect(problem.detail).toContain('cpu 1000 vCPU asked');
    expect(problem.detail).toContain(`at most ${node.perJobLimits.cpu} vCPU`);
    expect(reply.body.bid).toMatchObject({ accepted: false });
    const declined = await call('GET', `/v1/executions/${reply.body.executionId}`);
    expect(declined.body).toMatchObject({ state: 'DECLINED', reason: reply.body.bid.reason });
  });

  test('a GPU is declined on this backend with a reason', async () => {
    const reply = await askBid(job(['echo'], { resources: { gpu: 1 } }));

    expect(reply.bid).toMatchObject({ accepted: false, reason: expect.stringContaining('GPU') });
  });
});

describe('a justification for a decision', () => {
  const why = 'too expensive for a nightly run; ünïcode kept';

  test('rejecting a bid keeps the justification in its history entry, shown by GET', async () => {
    const { executionId } = await askBid(job(['echo', 'why']));

    const rejected = await call('POST', `/v1/bids/${executionId}/reject`, { body: { justification: why } });

    expect(rejected.status, rejected.text).toBe(200);
    const shown = (await call('GET', `/v1/executions/${executionId}`)).body as Execution;
    expect(shown.state).toBe('BID_REJECTED');
    expect(shown.history.at(-1)).toMatchObject({ state: 'BID_REJECTED', justification: why });
  });

  test('a review of the result keeps it on the review and in a history entry of its own', async () => {
    const accepted = await submitJob(job(['echo', 'keep']));
    const rejected = await submitJob(job(['echo', 'drop']));
    await waitUntil(accepted.id);
    await waitUntil(rejected.id);

    const accept = await call('POST', `/v1/executions/${accepted.id}/result/accept`, {
      body: { justification: 'matches the reference output' },
    });
    const reject = await call('POST', `/v1/executions/${rejected.id}/result/reject`, {
      body: { justification: why },
    });

    expect(accept.status, accept.text).toBe(200);
    expect(reject.status, reject.text).toBe(200);
    const acceptedNow = (await call('GET', `/v1/executions/${accepted.id}`)).body as Execution;
    const rejectedNow = (await call('GET', `/v1/executions/${rejected.id}`)).body as Execution;
    expect(acceptedNow.result).toMatchObject({
      review: 'ACCEPTED',
      justification: 'matches the reference output',
    });
    expect(acceptedNow.history.at(-1)).toMatchObject({
      state: 'COMPLETED',
      review: 'ACCEPTED',
      justification: 'matches the reference output',
    });
    expect(rejectedNow.result).toMatchObject({ review: 'REJECTED', justification: why });
    expect(rejectedNow.history.at(-1)).toMatchObject({
      state: 'COMPLETED',
      review: 'REJECTED',
      justification: why,
    });
  });

  test('no body, and an empty object, are still accepted', async () => {
    const first = await askBid(job(['echo', 'a']));
    const second = await askBid(job(['echo', 'b']));

    const bare = await call('POST', `/v1/bids/${first.executionId}/reject`);
    const empty = await call('POST', `/v1/bids/${second.executionId}/reject`, { body: {} });

    expect(bare.status, bare.text).toBe(200);
    expect(empty.status, empty.text).toBe(200);
    expect(empty.body.history.at(-1)).not.toHaveProperty('justification');
  });

  test.each([
    ['an unknown field', { justification: 'ok', reason: 'x' }, 'reason'],
    ['an empty justification', { justification: '' }, 'justification'],
    ['a justification over 1,000 characters', { justification: 'x'.repeat(1001) }, 'justification'],
    ['a justification that is not text', { justification: 42 }, 'justification'],
    ['a body that is not an object', ['why'], '(body)'],
  ])('%s is refused with 400 and changes nothing', async (_what, body, field) => {
    const { executionId } = await askBid(job(['echo', 'c']));

    const reply = await call('POST', `/v1/bids/${executionId}/reject`, { body });

    expectFieldError(reply, field);
    expect((await call('GET', `/v1/executions/${executionId}`)).body.state).toBe('OFFERED');
  });

  test('a justification of exactly 1,000 characters is kept whole', async () => {
    const { executionId } = await askBid(job(['echo', 'd']));
    const longest = 'é'.repeat(1000);

    const reply = await call('POST', `/v1/bids/${executionId}/reject`, { body: { justification: longest } });

    expect(reply.status, reply.text).toBe(200);
    expect(reply.body.history.at(-1).justification).toBe(longest);
  });
});

describe('bid expiry', () => {
  let shortLived: TestServer;
  beforeAll(async () => {
    shortLived = await startServer({ FERRY_BACKEND: 'process', FERRY_BID_TTL_SECONDS: '1' });
  });
  afterAll(async () => {
    await shortLived?.close();
  });

  test('the sweeper expires an offer not accepted in time; accepting it then is a 409', async () => {
    const at = (path: string, method = 'GET') => fetch(`${shortLived.url}${path}`, { method });
    const asked = await fetch(`${shortLived.url}/v1/bids`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(job(['echo', 'late'])),
    });
    const { executionId } = (await asked.json()) as { executionId: string };

    await new Promise((resolve) => setTimeout(resolve, 2000));
    const expired = (await (await at(`/v1/executions/${executionId}`)).json()) as Execution;
    const accept = await at(`/v1/bids/${executionId}/accept`, 'POST');

    expect(asked.status).toBe(201);
    expect(expired.state).toBe('EXPIRED');
    expect(expired.history.at(-1)).toMatchObject({
      state: 'EXPIRED',
      reason: 'the bid was not accepted in time',
    });
    expect(accept.status).toBe(409);
    expect(accept.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect((await accept.json()) as { detail: string }).toMatchObject({
      status: 409,
      detail: expect.any(String),
    });
  });
});

describe('Idempotency-Key', () => {
  const token = 'idempotent-caller';

  test('the same POST /v1/jobs twice with one key runs once and replays the first answer', async () => {
    const before = (await allExecutions(token)).length;
    const body = JSON.stringify(job(['echo', 'once']));
    const headers = { 'idempotency-key': 'key-same-1' };

    const first = await call('POST', '/v1/jobs', { body, headers, token });
    const second = await call('POST', '/v1/jobs', { body, headers, token });

    expect(first.status).toBe(202);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    expect(second.status).toBe(202);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(second.text).toBe(first.text);
    expect((await allExecutions(token)).length).toBe(before + 1);
    await waitUntil(first.body.id, { token });
  });

  test('the same key with a different body is a 422 and creates nothing', async () => {
    const headers = { 'idempotency-key': 'key-reused-1' };
    await call('POST', '/v1/jobs', { body: job(['echo', 'a']), headers, token });
    const before = (await allExecutions(token)).length;

    const reused = await call('POST', '/v1/jobs', { body: job(['echo', 'b']), headers, token });

    expect(expectProblem(reused, 422).detail).toContain('Idempotency-Key');
    expect((await allExecutions(token)).length).toBe(before);
  });

  test('a key is per caller: another caller with the same key gets its own execution', async () => {
    const body = JSON.stringify(job(['echo', 'mine']));
    const headers = { 'idempotency-key': 'key-shared-1' };

    const a = await call('POST', '/v1/jobs', { body, headers, token: 'idem-a' });
    const b = await call('POST', '/v1/jobs', { body, headers, token: 'idem-b' });

    expect(a.status).toBe(202);
    expect(b.status).toBe(202);
    expect(b.headers.get('idempotent-replayed')).toBeNull();
    expect(b.body.id).not.toBe(a.body.id);
  });

  test('a refused request is not remembered: retrying it with the same key runs it again', async () => {
    const headers = { 'idempotency-key': 'key-after-error-1' };
    const bad = await call('POST', '/v1/jobs', { body: job([]), headers, token });
    const retried = await call('POST', '/v1/jobs', { body: job([]), headers, token });

    expectProblem(bad, 400);
    expectProblem(retried, 400);
    expect(retried.headers.get('idempotent-replayed')).toBeNull();
  });

  test('a retried declined POST /v1/jobs with one key returns the same DECLINED execution', async () => {
    const caller = 'declined-jobs-caller';
    const body = JSON.stringify(job(['echo'], { resources: { cpu: 1000 } }));
    const headers = { 'idempotency-key': 'key-declined-jobs' };

    const first = await call('POST', '/v1/jobs', { body, headers, token: caller });
    const second = await call('POST', '/v1/jobs', { body, headers, token: caller });

    expectProblem(first, 422);
    expectProblem(second, 422);
    expect(second.body).toEqual(first.body);
    const listed = await allExecutions(caller);
    expect(listed.map((e) => [e.id, e.state])).toEqual([[first.body.executionId, 'DECLINED']]);
  });

  test('a retried declined POST /v1/bids with one key returns the same DECLINED execution', async () => {
    const caller = 'declined-bids-caller';
    const body = JSON.stringify(job(['echo'], { resources: { cpu: 1000 } }));
    const headers = { 'idempotency-key': 'key-declined-bids' };

    const first = await call('POST', '/v1/bids', { body, headers, token: caller });
    const second = await call('POST', '/v1/bids', { body, headers, token: caller });

    for (const reply of [first, second]) {
      expect(reply.status, reply.text).toBe(201);
      expect(reply.body.bid.accepted).toBe(false);
    }
    expect(second.body.executionId).toBe(first.body.executionId);
    const listed = await allExecutions(caller);
    expect(listed.map((e) => [e.id, e.state])).toEqual([[first.body.executionId, 'DECLINED']]);
  });

  test('an empty or oversized key is a 400', async () => {
    const long = await call('POST', '/v1/jobs', {
      body: job(['echo']),
      headers: { 'idempotency-key': 'k'.repeat(256) },
      token,
    });

    expectProblem(long, 400);
  });
});

describe('ownership', () => {
  test("another caller's execution does not exist for them; lists are per caller", async () => {
    const mine = await submitJob(job(['echo', 'private']), 'owner-a');
    const theirs = await submitJob(job(['echo', 'other']), 'owner-b');
    const bid = await askBid(job(['echo']), 'owner-a');

    const asB = await call('GET', `/v1/executions/${mine.id}`, { token: 'owner-b' });
    const asDefault = await call('GET', `/v1/executions/${mine.id}`);
    const waitAsB = await call('GET', `/v1/executions/${mine.id}/wait?timeoutSeconds=0`, {
      token: 'owner-b',
    });
    const logsAsB = await call('GET', `/v1/executions/${mine.id}/logs`, { token: 'owner-b' });
    const cancelAsB = await call('POST', `/v1/executions/${mine.id}/cancel`, { token: 'owner-b' });
    const acceptAsB = await call('POST', `/v1/bids/${bid.executionId}/accept`, { token: 'owner-b' });
    const listA = (await allExecutions('owner-a')).map((e) => e.id);
    const listB = (await allExecutions('owner-b')).map((e) => e.id);

    for (const reply of [asB, asDefault, waitAsB, logsAsB, cancelAsB, acceptAsB]) expectProblem(reply, 404);
    expect(listA).toContain(mine.id);
    expect(listA).not.toContain(theirs.id);
    expect(listB).toEqual([theirs.id]);
    expect((await call('GET', `/v1/executions/${bid.executionId}`, { token: 'owner-a' })).body.state).toBe(
      'OFFERED',
    );
    expect((await waitUntil(mine.id, { token: 'owner-a' })).state).toBe('COMPLETED');
  });
});

describe('listing', () => {
  test('by several states returns exactly the executions in any of them', async () => {
    const token = 'lister-states';
    const completed = await submitJob(job(['true']), token);
    const failed = await submitJob(job(['ferry-no-such-program']), token);
    const offered = await askBid(job(['echo']), token);
    await waitUntil(completed.id, { token });
    await waitUntil(failed.id, { token });

    const repeated = await call('GET', '/v1/executions?state=COMPLETED&state=FAILED', { token });
    const commaSeparated = await call('GET', '/v1/executions?state=COMPLETED,FAILED', { token });
    const offeredOnly = await call('GET', '/v1/executions?state=OFFERED', { token });

    const ids = (reply: Reply) => (reply.body.items as Execution[]).map((e) => e.id).sort();
    expect(ids(repeated)).toEqual([completed.id, failed.id].sort());
    expect(ids(commaSeparated)).toEqual(ids(repeated));
    expect(ids(offeredOnly)).toEqual([offered.executionId]);
  });

  test('walking nextCursor with limit=2 gives each execution exactly once, newest first', async () => {
    const token = 'lister-pages';
    const created: string[] = [];
    for (let i = 0; i < 5; i++) {
      created.push((await askBid(job(['echo', String(i)]), token)).executionId);
      await new Promise((resolve) => setTimeout(resolve, 5)); // distinct creation times
    }

    const pages: Execution[][] = [];
    let cursor: string | undefined;
    do {
      const reply = await call('GET', `/v1/executions?limit=2${cursor ? `&cursor=${cursor}` : ''}`, {
        token,
      });
      expect(reply.status).toBe(200);
      pages.push(reply.body.items);
      cursor = reply.body.nextCursor;
    } while (cursor !== undefined && pages.length < 10);

    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat().map((e) => e.id)).toEqual([...created].reverse());
  });
});

describe('waiting', () => {
  test('a wait that times out on a running job returns 200 with it and ferry-wait-done false', async () => {
    const running = await submitJob(job(['sleep', '30']));
    await waitUntil(running.id, { states: ['RUNNING'] });

    const started = Date.now();
    const reply = await call('GET', `/v1/executions/${running.id}/wait?timeoutSeconds=1`);
    const elapsed = Date.now() - started;

    expect(reply.status).toBe(200);
    expect(reply.headers.get('ferry-wait-done')).toBe('false');
    expect(reply.body).toMatchObject({ id: running.id, state: 'RUNNING' });
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(5000);
    expect((await call('POST', `/v1/executions/${running.id}/cancel`)).status).toBe(202);
    expect((await waitUntil(running.id)).state).toBe('CANCELLED');
  });

  test('a wait on a finished job returns at once with ferry-wait-done true', async () => {
    const finished = await submitJob(job(['true']));
    await waitUntil(finished.id);

    const reply = await call('GET', `/v1/executions/${finished.id}/wait?timeoutSeconds=30`);

    expect(reply.headers.get('ferry-wait-done')).toBe('true');
    expect(reply.body.state).toBe('COMPLETED');
  });
});

describe('the node', () => {
  test('GET /v1/node shows the process backend, not isolated, with its capacity', async () => {
    const reply = await call('GET', '/v1/node');

    expect(reply.status).toBe(200);
    expect(reply.headers.get('content-type')).toMatch(/^application\/json/);
    expect(reply.body).toMatchObject({
      backend: 'process',
      isolated: false,
      version: expect.any(String),
      capacity: { maxConcurrency: 4, cpu: expect.any(Number), memoryMiB: expect.any(Number) },
      usage: { runningJobs: expect.any(Number), queuedJobs: expect.any(Number) },
      perJobLimits: { gpu: false },
    });
    expect(reply.body.capacity.cpu).toBeGreaterThan(0);
    expect(reply.body.capacity.memoryMiB).toBeGreaterThan(0);
  });
});

describe('jobs as plain processes', () => {
  test('a program that does not exist FAILS with a reason naming it', async () => {
    const submitted = await submitJob(job(['ferry-no-such-program-xyz', '--flag']));

    const done = await waitUntil(submitted.id);

    expect(done.state).toBe('FAILED');
    expect(done.reason).toContain('ferry-no-such-program-xyz');
    expect(done.exitCode ?? null).toBeNull();
  });

  test("the job's exit code is mirrored and a non-zero exit still COMPLETES", async () => {
    const submitted = await submitJob(job(['sh', '-c', 'exit 7']));

    const done = await waitUntil(submitted.id);

    expect(done).toMatchObject({ state: 'COMPLETED', exitCode: 7 });
  });

  test('stdout and stderr are captured separately, byte for byte', async () => {
    const submitted = await submitJob(
      job(['sh', '-c', 'printf "out\\n"; printf "err: $GREETING" >&2'], { env: { GREETING: 'hé' } }),
    );

    const done = await waitUntil(submitted.id);

    expect(done.state).toBe('COMPLETED');
    expect(await logOf(submitted.id, 'stdout')).toBe('out\n');
    expect(await logOf(submitted.id, 'stderr')).toBe('err: hé');
    expect(done.result?.stdout).toMatchObject({ totalBytes: 4, truncated: false });
    expect(done.result?.stderr).toMatchObject({ totalBytes: Buffer.byteLength('err: hé'), truncated: false });
  });
});

describe('upload links', () => {
  test('are a 404 here, whatever is asked: the local backends store results themselves', async () => {
    const submitted = await submitJob(job(['sh', '-c', 'echo stored']));
    const path = `/v1/executions/${submitted.id}/uploads`;
    const asked = { links: [{ action: 'put', key: `executions/${submitted.id}/stdout` }] };

    const replies = [
      await call('POST', path, { body: asked, headers: { 'ferry-upload-secret': 'x'.repeat(43) } }),
      await call('POST', path, { body: asked }),
      await call('POST', path, { body: 'not json', headers: { 'content-type': 'text/plain' } }),
    ];

    for (const reply of replies) {
      expect(expectProblem(reply, 404).detail).toBe(
        'this Ferry hands out no upload links: its backend stores every result itself',
      );
    }
    const done = await waitUntil(submitted.id);
    expect(done.state).toBe('COMPLETED');
    expect(await logOf(submitted.id, 'stdout')).toBe('stored\n');
  });
});

describe('after all of the above', () => {
  test('the server is healthy and a normal job still succeeds', async () => {
    const submitted = await submitJob(job(['echo', 'hi']));

    const done = await waitUntil(submitted.id);

    expect(done).toMatchObject({ state: 'COMPLETED', exitCode: 0 });
    expect(await logOf(submitted.id, 'stdout')).toBe('hi\n');
    expect((await call('GET', '/healthz')).text).toBe('ok\n');
  });
});
