// The server `ferry dashboard` runs, against a real HTTP server standing in for the deployed API
// that records what reaches it: what the pages send is forwarded with the server's own
// credentials and nothing of the browser's; what the API answers comes back as the pages read
// it; and a request without the launch token, for another host name or from another site's page
// reaches nothing.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type DashboardProxy, startDashboardProxy } from '../../cli/dashboard.ts';

const LAUNCH = 'launch-token-for-the-test';
const UPSTREAM_TOKEN = 'upstream-bearer-token';

interface Arrived {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** What the stand-in API answers next, and everything that reached it. */
let answer: (request: Arrived, response: http.ServerResponse) => void;
let arrived: Arrived[] = [];
let upstream: http.Server;
let upstreamUrl: string;
let proxy: DashboardProxy;

const json = (response: http.ServerResponse, status: number, body: unknown, type = 'application/json') => {
  response.writeHead(status, { 'content-type': type });
  response.end(JSON.stringify(body));
};

beforeAll(async () => {
  upstream = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const seen = {
        method: request.method ?? '',
        url: request.url ?? '',
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      arrived.push(seen);
      answer(seen, response);
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  // A stage path, as an API Gateway stage URL may have.
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/stage/`;
  proxy = await startDashboardProxy({
    upstream: upstreamUrl,
    upstreamToken: UPSTREAM_TOKEN,
    launchToken: LAUNCH,
    port: 0,
  });
});

afterAll(async () => {
  await proxy?.close();
  upstream?.closeAllConnections();
  await new Promise((resolve) => upstream?.close(resolve));
});

afterEach(() => {
  arrived = [];
  answer = (_, response) => json(response, 200, { ok: true });
});

interface Raw {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** A request as any client may send it, Host and all (fetch would not let a test set Host). */
function raw(
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: Buffer | string; url?: string } = {},
): Promise<Raw> {
  const base = new URL(options.url ?? proxy.url);
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: base.hostname,
        port: base.port,
        path,
        method: options.method ?? 'GET',
        headers: options.headers ?? {},
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      },
    );
    request.on('error', reject);
    request.end(options.body);
  });
}

const withToken = (headers: Record<string, string> = {}) => ({
  authorization: `Bearer ${LAUNCH}`,
  ...headers,
});
const detailOf = (reply: Raw) => (JSON.parse(reply.body) as { detail: string }).detail;

describe('forwarding', () => {
  it('sends the pages’ request with its own credentials and nothing of the browser’s', async () => {
    answer = (_, response) => json(response, 202, { id: 'ex_1' });

    const reply = await raw('/v1/jobs?x=1&x=2', {
      method: 'POST',
      headers: withToken({
        'content-type': 'application/json',
        'idempotency-key': 'key-1',
        cookie: 'session=secret',
        'x-forwarded-for': '10.0.0.1',
        origin: proxy.url,
        'sec-fetch-site': 'same-origin',
      }),
      body: '{"image":"alpine","command":["true"]}',
    });

    expect(reply.status).toBe(202);
    expect(JSON.parse(reply.body)).toEqual({ id: 'ex_1' });
    expect(arrived).toHaveLength(1);
    const [seen] = arrived;
    expect(seen?.method).toBe('POST');
    expect(seen?.url).toBe('/stage/v1/jobs?x=1&x=2');
    expect(seen?.body).toBe('{"image":"alpine","command":["true"]}');
    expect(seen?.headers.authorization).toBe(`Bearer ${UPSTREAM_TOKEN}`);
    expect(seen?.headers['idempotency-key']).toBe('key-1');
    expect(seen?.headers['content-type']).toBe('application/json');
    for (const name of ['cookie', 'x-forwarded-for', 'origin', 'sec-fetch-site']) {
      expect(seen?.headers[name], name).toBeUndefined();
    }
  });

  it('answers with the API’s status, Ferry’s headers and the body as it streams, and no cookie', async () => {
    answer = (_, response) => {
      response.writeHead(200, {
        'content-type': 'application/octet-stream',
        'ferry-next-offset': '6',
        'ferry-complete': 'false',
        'set-cookie': 'tracker=1',
      });
      response.write('first\n');
      setTimeout(() => response.end('second\n'), 300);
    };

    const reply = await raw('/v1/executions/ex_1/logs?stream=stdout&offset=0&follow=true', {
      headers: withToken(),
    });

    expect(reply.status).toBe(200);
    expect(reply.body).toBe('first\nsecond\n');
    expect(reply.headers['ferry-next-offset']).toBe('6');
    expect(reply.headers['ferry-complete']).toBe('false');
    expect(reply.headers['set-cookie']).toBeUndefined();
    expect(reply.headers['x-content-type-options']).toBe('nosniff');
  });

  it('passes Ferry’s problem documents through as they are', async () => {
    const problem = { type: 'about:blank', title: 'Not Found', status: 404, detail: 'no execution ex_2' };
    answer = (_, response) => json(response, 404, problem, 'application/problem+json');

    const reply = await raw('/v1/executions/ex_2', { headers: withToken() });

    expect(reply.status).toBe(404);
    expect(reply.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(reply.body)).toEqual(problem);
  });

  it('turns API Gateway’s own refusals into problem documents that say what it said', async () => {
    const denial =
      'User: arn:aws:iam::123456789012:user/bob is not authorized to perform: execute-api:Invoke';
    answer = (_, response) => json(response, 403, { Message: denial });
    const forbidden = await raw('/v1/node', { headers: withToken() });
    expect(forbidden.status).toBe(403);
    expect(forbidden.headers['content-type']).toBe('application/problem+json');
    expect(detailOf(forbidden)).toBe(
      `the API at ${upstreamUrl} refused the request signed with your AWS credentials: ${denial}`,
    );

    answer = (_, response) => json(response, 503, { message: 'Service Unavailable' });
    const unavailable = await raw('/v1/node', { headers: withToken() });
    expect(unavailable.status).toBe(503);
    expect(detailOf(unavailable)).toBe(`the API at ${upstreamUrl} answered 503: Service Unavailable`);
  });

  it('answers an upstream 401 as a bad gateway, so the pages do not ask again for the launch token', async () => {
    answer = (_, response) =>
      json(
        response,
        401,
        { type: 'about:blank', title: 'Unauthorized', status: 401, detail: 'the bearer token is not valid' },
        'application/problem+json',
      );

    const reply = await raw('/v1/node', { headers: withToken() });

    expect(reply.status).toBe(502);
    expect(reply.headers['www-authenticate']).toBeUndefined();
    expect(detailOf(reply)).toMatch(
      /refused the credentials this dashboard sends: the bearer token is not valid$/,
    );
  });

  it('says so when the API cannot be reached', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const lonely = await startDashboardProxy({
      upstream: `http://127.0.0.1:${port}`,
      upstreamToken: UPSTREAM_TOKEN,
      launchToken: LAUNCH,
      port: 0,
    });
    try {
      const reply = await raw('/v1/node', { headers: withToken(), url: lonely.url });
      expect(reply.status).toBe(502);
      expect(detailOf(reply)).toMatch(
        new RegExp(`^cannot reach Ferry at http://127\\.0\\.0\\.1:${port} \\(.*ECONNREFUSED`),
      );
    } finally {
      await lonely.close();
    }
  });

  it('serves the dashboard’s pages itself, under the same policy as `ferry serve`', async () => {
    const page = await raw('/');

    expect([200, 503]).toContain(page.status);
    expect(page.headers['content-security-policy']).toContain("default-src 'self'");
    expect(arrived).toEqual([]);
  });
});

describe('refusals: nothing reaches the API', () => {
  it('refuses a request without the launch token, or with another', async () => {
    const none = await raw('/v1/node');
    const wrong = await raw('/v1/node', { headers: { authorization: 'Bearer not-it' } });
    const upstreams = await raw('/v1/node', { headers: { authorization: `Bearer ${UPSTREAM_TOKEN}` } });

    expect(none.status).toBe(401);
    expect(detailOf(none)).toBe(
      'a bearer token is required (Authorization: Bearer <the token `ferry dashboard` printed>)',
    );
    expect(wrong.status).toBe(401);
    expect(detailOf(wrong)).toBe('the bearer token is not valid');
    expect(upstreams.status).toBe(401);
    expect(arrived).toEqual([]);
  });

  it('refuses a host name other than this machine’s loopback names (DNS rebinding)', async () => {
    const port = new URL(proxy.url).port;

    const rebound = await raw('/v1/node', { headers: withToken({ host: `attacker.example:${port}` }) });
    const pages = await raw('/', { headers: { host: `attacker.example:${port}` } });
    const local = await raw('/v1/node', { headers: withToken({ host: `localhost:${port}` }) });

    expect(rebound.status).toBe(403);
    expect(detailOf(rebound)).toBe(
      `this server does not answer to the host "attacker.example:${port}"; use localhost, 127.0.0.1, [::1]`,
    );
    expect(pages.status).toBe(403);
    expect(local.status).toBe(200);
    expect(arrived).toHaveLength(1);
  });

  it('refuses what another site’s page sends, even with the token', async () => {
    const fromOrigin = await raw('/v1/jobs', {
      method: 'POST',
      headers: withToken({ origin: 'https://attacker.example', 'content-type': 'application/json' }),
      body: '{}',
    });
    const crossSite = await raw('/v1/jobs', {
      method: 'POST',
      headers: withToken({ 'sec-fetch-site': 'cross-site', 'content-type': 'application/json' }),
      body: '{}',
    });

    expect(fromOrigin.status).toBe(403);
    expect(detailOf(fromOrigin)).toBe('requests from pages on https://attacker.example are refused');
    expect(crossSite.status).toBe(403);
    expect(arrived).toEqual([]);
  });

  it('forwards only the API the pages call', async () => {
    const tes = await raw('/ga4gh/tes/v1/tasks', { headers: withToken() });
    const objects = await raw('/objects/x', { headers: withToken() });

    expect(tes.status).toBe(404);
    expect(objects.status).toBe(404);
    expect(detailOf(tes)).toBe(
      'nothing at /ga4gh/tes/v1/tasks: this server forwards the API the pages call, /v1/…',
    );
    expect(arrived).toEqual([]);
  });

  it('refuses a body that is too large or not UTF-8', async () => {
    const large = await raw('/v1/jobs', {
      method: 'POST',
      headers: withToken({ 'content-type': 'application/json' }),
      body: Buffer.alloc(2 * 1024 * 1024, 0x20),
    });
    const binary = await raw('/v1/jobs', {
      method: 'POST',
      headers: withToken({ 'content-type': 'application/json' }),
      body: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]),
    });

    expect(large.status).toBe(413);
    expect(binary.status).toBe(400);
    expect(detailOf(binary)).toBe('the body must be UTF-8 JSON');
    expect(arrived).toEqual([]);
  });

  it('listens on loopback only: this machine’s other addresses do not reach it', async () => {
    const port = Number(new URL(proxy.url).port);
    const outward = Object.values(os.networkInterfaces())
      .flat()
      .find((address) => address !== undefined && address.family === 'IPv4' && !address.internal);
    expect(outward, 'this machine has no address beyond loopback to try').toBeDefined();

    const attempt = raw('/', { url: `http://${outward?.address}:${port}` });

    await expect(attempt).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
