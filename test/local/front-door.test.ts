// The local server's front door, over real HTTP: no request can stop the server or reach the
// API by a malformed path; a web page on another site cannot use the API through the user's
// browser (Origin, Host, Sec-Fetch-Site, JSON only with its content type); bearer tokens are
// checked as RFC 6750 and 9110 say. Every refusal is a problem document and creates nothing.
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import {
  type ServerProcess,
  spawnServer,
  startServer,
  type TestServer,
  tempDir,
  waitDone,
} from '../support/server.ts';

const IMAGE = 'local/none:1';
const UNKNOWN_ID = `ex_${'0'.repeat(26)}`;
const JSON_TYPE = { 'content-type': 'application/json' };
const job = (command: string[]) => JSON.stringify({ image: IMAGE, command });

interface Reply {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly text: string;
  // biome-ignore lint/suspicious/noExplicitAny: replies are JSON of many shapes; tests look inside
  readonly body: any;
}

const parse = (text: string): unknown => {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
};

/**
 * A request with exactly these headers (fetch would add or refuse some, such as Host).
 * `path` is sent as given, without normalisation.
 */
function send(
  baseUrl: string,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const request = http.request({ hostname, port, method, path, headers: options.headers ?? {} });
    request.on('response', (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        text += chunk;
      });
      response.on('end', () =>
        resolve({ status: response.statusCode ?? 0, headers: response.headers, text, body: parse(text) }),
      );
    });
    request.on('error', reject);
    request.end(options.body);
  });
}

/** Writes a request byte for byte on a socket (Node's client will not send every target) and reads the reply. */
function sendRaw(baseUrl: string, head: string): Promise<{ status: number; text: string }> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname);
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      text += chunk;
    });
    socket.on('end', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text }));
    socket.on('error', reject);
    socket.write(head);
  });
}

function expectProblem(reply: Reply, status: number) {
  expect(reply.status, reply.text).toBe(status);
  expect(reply.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(reply.body).toMatchObject({ status, title: expect.any(String), detail: expect.any(String) });
  return reply.body as { detail: string; errors?: { field: string; message: string }[] };
}

async function executionCount(baseUrl: string, headers: Record<string, string> = {}): Promise<number> {
  const reply = await send(baseUrl, 'GET', '/v1/executions?limit=500', { headers });
  expect(reply.status, reply.text).toBe(200);
  return reply.body.items.length;
}

describe('no request can stop the server', () => {
  let ferry: ServerProcess;
  beforeAll(async () => {
    ferry = await spawnServer({ FERRY_DATA_DIR: await tempDir(), FERRY_BACKEND: 'process' });
  });
  afterAll(async () => {
    await ferry?.kill('SIGTERM');
  });

  test.each([
    ['an absolute URL that is no URL', 'http://a:b/', 400],
    ['an absolute URL', 'http://127.0.0.1/v1/node', 400],
    ['the asterisk form', '*', 400],
    ['a path that looks like an authority', '//a:b/v1/node', 404],
  ])('%s as the request target is refused, and the server goes on', async (_name, target, status) => {
    const reply = await sendRaw(
      ferry.url,
      `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    );

    expect(reply.status, reply.text).toBe(status);
    expect(reply.text).toMatch(/content-type: application\/problem\+json/i);
    expect(ferry.child.exitCode).toBeNull();
    expect((await send(ferry.url, 'GET', '/healthz')).text).toBe('ok\n');
    const submitted = await send(ferry.url, 'POST', '/v1/jobs', { headers: JSON_TYPE, body: job(['true']) });
    expect(submitted.status, submitted.text).toBe(202);
    expect((await waitDone(ferry.client, submitted.body.id, 30)).state).toBe('COMPLETED');
  });

  test('a request line Node cannot parse gets a problem, and the server goes on', async () => {
    const reply = await sendRaw(ferry.url, 'GET /v1/node HTTP/9.9 extra\r\n\r\n');

    expect(reply.status).toBe(400);
    expect(reply.text).toMatch(/content-type: application\/problem\+json/i);
    expect((await send(ferry.url, 'GET', '/healthz')).text).toBe('ok\n');
  });
});

describe('with the default settings (no token)', () => {
  let server: TestServer;
  let origin: string;
  beforeAll(async () => {
    server = await startServer({ FERRY_BACKEND: 'process' });
    origin = server.url;
  });
  afterAll(async () => {
    await server?.close();
  });

  describe('malformed paths are refused with 400, never 500', () => {
    test.each([
      ['GET', '/objects/%E0%A4%A'],
      ['GET', '/objects/executions/%ZZ/stdout?expires=1&signature=x'],
      ['GET', '/v1/executions/%E0%A4%A'],
      ['POST', `/v1/executions/${UNKNOWN_ID}%FF/cancel`],
      ['GET', '/v1/%'],
    ])('%s %s', async (method, path) => {
      const problem = expectProblem(await send(server.url, method, path), 400);

      expect(problem.errors).toContainEqual({ field: 'path', message: 'malformed percent-encoding' });
    });

    test('a path over 8 KiB is refused with 414', async () => {
      expectProblem(await send(server.url, 'GET', `/v1/executions/${'a'.repeat(9000)}`), 414);
    });

    test('a request line over what Node reads is refused with a 431 problem', async () => {
      expectProblem(await send(server.url, 'GET', `/v1/executions/${'a'.repeat(20_000)}`), 431);
      expect((await send(server.url, 'GET', '/healthz')).text).toBe('ok\n');
    });
  });

  describe('a page on another site cannot use the API', () => {
    test.each([
      ['a cross-origin POST', { origin: 'http://evil.example', ...JSON_TYPE }, 403],
      [
        'a POST from a page on another port of localhost',
        { origin: 'http://localhost:1', ...JSON_TYPE },
        403,
      ],
      ['a POST from a sandboxed page (Origin null)', { origin: 'null', ...JSON_TYPE }, 403],
      ['a POST a browser marks cross-site', { 'sec-fetch-site': 'cross-site', ...JSON_TYPE }, 403],
      ['a POST naming another host (DNS rebinding)', { host: 'evil.example:8080', ...JSON_TYPE }, 403],
      ['a form POST without a content type', {}, 415],
      ['a POST as text/plain', { 'content-type': 'text/plain' }, 415],
      ['a POST as a form', { 'content-type': 'application/x-www-form-urlencoded' }, 415],
      ['JSON in another charset', { 'content-type': 'application/json; charset=utf-16' }, 415],
    ])('%s is refused and creates nothing', async (_name, headers, status) => {
      const before = await executionCount(server.url);

      for (const path of ['/v1/jobs', '/v1/bids']) {
        expectProblem(
          await send(server.url, 'POST', path, { headers, body: job(['echo', 'pwned']) }),
          status,
        );
      }

      expect(await executionCount(server.url)).toBe(before);
    });

    test('a read naming another host or from another origin is refused too', async () => {
      expectProblem(
        await send(server.url, 'GET', '/v1/executions', { headers: { host: 'evil.example' } }),
        403,
      );
      expectProblem(
        await send(server.url, 'GET', '/v1/executions', { headers: { origin: 'http://evil.example' } }),
        403,
      );
    });

    test('the server’s own origins, the loopback names and callers without Origin (the CLI) are served', async () => {
      const port = new URL(server.url).port;
      const sameOrigin: Record<string, string>[] = [
        { origin, 'sec-fetch-site': 'same-origin' },
        { origin: `http://localhost:${port}`, host: `localhost:${port}` },
        { origin: `http://[::1]:${port}`, host: `[::1]:${port}` },
        {},
      ];
      for (const headers of sameOrigin) {
        const reply = await send(server.url, 'POST', '/v1/jobs', {
          headers: { ...headers, ...JSON_TYPE },
          body: job(['echo', 'ok']),
        });
        expect(reply.status, `${JSON.stringify(headers)}: ${reply.text}`).toBe(202);
        expect((await waitDone(server.client, reply.body.id, 30)).state).toBe('COMPLETED');
      }
      const suffixed = await send(server.url, 'POST', '/v1/bids', {
        headers: { 'content-type': 'application/vnd.ferry+json; charset=UTF-8' },
        body: job(['true']),
      });
      expect(suffixed.status, suffixed.text).toBe(201);
    });

    test('download links stay usable from anywhere: they are signed', async () => {
      const reply = await send(server.url, 'POST', '/v1/jobs', {
        headers: JSON_TYPE,
        body: job(['echo', 'linked']),
      });
      await waitDone(server.client, reply.body.id, 30);
      const result = await send(server.url, 'GET', `/v1/executions/${reply.body.id}/result`);
      const link = new URL(result.body.links.stdout);

      const download = await send(server.url, 'GET', `${link.pathname}${link.search}`, {
        headers: { origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' },
      });

      expect(download.status, download.text).toBe(200);
      expect(download.text).toBe('linked\n');
    });
  });

  describe('cancel takes no body or an empty JSON object', () => {
    async function sleeper(): Promise<string> {
      const reply = await send(server.url, 'POST', '/v1/jobs', {
        headers: JSON_TYPE,
        body: job(['sleep', '30']),
      });
      expect(reply.status, reply.text).toBe(202);
      return reply.body.id;
    }

    test.each([
      ['{}', '{}'],
      ['{} with spaces', ' { } '],
      ['no body', undefined],
    ])('%s cancels', async (_name, body) => {
      const id = await sleeper();

      const reply = await send(server.url, 'POST', `/v1/executions/${id}/cancel`, {
        headers: body === undefined ? {} : JSON_TYPE,
        ...(body === undefined ? {} : { body }),
      });

      expect(reply.status, reply.text).toBe(202);
      expect((await waitDone(server.client, id, 30)).state).toBe('CANCELLED');
    });

    test.each([
      ['a field', '{"force": true}', JSON_TYPE, 400, 'force'],
      ['an array', '[]', JSON_TYPE, 400, '(body)'],
      ['{} without a content type', '{}', {}, 415, undefined],
    ])('%s is refused and the job runs on', async (_name, body, headers, status, field) => {
      const id = await sleeper();

      const problem = expectProblem(
        await send(server.url, 'POST', `/v1/executions/${id}/cancel`, { headers, body }),
        status,
      );

      if (field !== undefined) expect(problem.errors?.map((e) => e.field)).toEqual([field]);
      expect((await send(server.url, 'GET', `/v1/executions/${id}`)).body.state).not.toBe('CANCELLED');
      await send(server.url, 'POST', `/v1/executions/${id}/cancel`);
    });
  });

  test('a bearer token names a caller whatever the case of the scheme', async () => {
    const token = 'lower-case-caller';
    const reply = await send(server.url, 'POST', '/v1/bids', {
      headers: { authorization: `Bearer ${token}`, ...JSON_TYPE },
      body: job(['true']),
    });
    expect(reply.status, reply.text).toBe(201);

    for (const scheme of ['bearer', 'BEARER', 'Bearer']) {
      const seen = await send(server.url, 'GET', `/v1/executions/${reply.body.executionId}`, {
        headers: { authorization: `${scheme} ${token}` },
      });
      expect(seen.status, `${scheme}: ${seen.text}`).toBe(200);
    }
    expect(
      (await send(server.url, 'GET', `/v1/executions/${reply.body.executionId}`)).status,
      'the default caller is someone else',
    ).toBe(404);
  });
});

describe('FERRY_ALLOWED_ORIGINS', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer({
      FERRY_BACKEND: 'process',
      FERRY_ALLOWED_ORIGINS: 'https://dash.example, http://localhost:5173',
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  test('a listed origin may call the API, and its host may name the server', async () => {
    const listed: Record<string, string>[] = [
      { origin: 'https://dash.example', host: 'dash.example' },
      { origin: 'http://localhost:5173', 'sec-fetch-site': 'same-site' },
    ];
    for (const headers of listed) {
      const reply = await send(server.url, 'POST', '/v1/bids', {
        headers: { ...headers, ...JSON_TYPE },
        body: job(['true']),
      });
      expect(reply.status, reply.text).toBe(201);
    }
    expectProblem(
      await send(server.url, 'POST', '/v1/bids', {
        headers: { origin: 'https://other.example', ...JSON_TYPE },
        body: job(['true']),
      }),
      403,
    );
  });

  test('a value that is not an origin is refused at start, naming the setting', () => {
    for (const value of ['dash.example', 'https://dash.example/app', 'not a url']) {
      expect(() => loadConfig({ FERRY_ALLOWED_ORIGINS: value })).toThrow(/FERRY_ALLOWED_ORIGINS/);
    }
  });
});

describe('with FERRY_TOKEN', () => {
  const token = 'a-secret-token-of-some-length';
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer({ FERRY_BACKEND: 'process', FERRY_TOKEN: token });
  });
  afterAll(async () => {
    await server?.close();
  });

  test.each(['Bearer', 'bearer', 'BEARER', 'bEaReR'])('the scheme %s is accepted', async (scheme) => {
    const reply = await send(server.url, 'GET', '/v1/node', {
      headers: { authorization: `${scheme} ${token}` },
    });

    expect(reply.status, reply.text).toBe(200);
  });

  test.each([
    ['no Authorization header', undefined, 'Bearer realm="ferry"'],
    ['another scheme', `Basic ${Buffer.from(`u:${token}`).toString('base64')}`, 'Bearer realm="ferry"'],
    ['a wrong token', `Bearer ${token.slice(0, -1)}x`, 'Bearer realm="ferry", error="invalid_token"'],
    ['a wrong token of another length', 'Bearer short', 'Bearer realm="ferry", error="invalid_token"'],
    ['a token of one byte', 'Bearer x', 'Bearer realm="ferry", error="invalid_token"'],
  ])('%s is refused with 401 and a Bearer challenge', async (_name, authorization, challenge) => {
    const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
    const before = await executionCount(server.url, { authorization: `Bearer ${token}` });

    for (const [method, path, body] of [
      ['GET', '/v1/node', undefined],
      ['POST', '/v1/jobs', job(['true'])],
    ] as const) {
      const reply = await send(server.url, method, path, {
        headers: { ...headers, ...JSON_TYPE },
        ...(body === undefined ? {} : { body }),
      });
      expectProblem(reply, 401);
      expect(reply.headers['www-authenticate']).toBe(challenge);
    }

    expect(await executionCount(server.url, { authorization: `Bearer ${token}` })).toBe(before);
  });
});
