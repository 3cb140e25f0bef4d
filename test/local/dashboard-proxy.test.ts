// The server `ferry dashboard` runs, against a real HTTP server standing in for the deployed API
// that records what reaches it and checks its SigV4 signature as AWS would: what the pages send
// is forwarded signed with the user's keys and with nothing of the browser's; what the API
// answers comes back as the pages read it; and a request without the launch token, for another
// host name or from another site's page reaches nothing.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sigv4Signer } from '../../cli/client.ts';
import { type DashboardProxy, startDashboardProxy } from '../../cli/dashboard.ts';
import { type Verification, verifySignature } from '../../shared/adapters/emulated/sigv4-verify.ts';

const LAUNCH = 'launch-token-for-the-test';
const KEYS = { accessKeyId: 'AKIADASHBOARDTEST', secretAccessKey: 'dashboard-test-secret' };
const signer = sigv4Signer({ region: 'eu-west-1', credentials: KEYS });

interface Arrived {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
  /** The SigV4 signature checked against KEYS, as API Gateway checks it. */
  readonly signature: Verification;
  /** Resolves when the connection the request came on is closed. */
  readonly closed: Promise<void>;
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
    const closed = new Promise<void>((resolve) => response.once('close', () => resolve()));
    request.on('end', async () => {
      const body = Buffer.concat(chunks);
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(request.headers)) {
        if (typeof value === 'string') headers[name] = value;
      }
      const signature = await verifySignature(
        { method: request.method ?? '', url: request.url ?? '', headers, body },
        (id) => (id === KEYS.accessKeyId ? { secretAccessKey: KEYS.secretAccessKey } : undefined),
      );
      const seen = {
        method: request.method ?? '',
        url: request.url ?? '',
        headers: request.headers,
        body: body.toString('utf8'),
        signature,
        closed,
      };
      arrived.push(seen);
      answer(seen, response);
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  // A stage path, as an API Gateway stage URL may have.
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/stage/`;
  proxy = await startDashboardProxy({ upstream: upstreamUrl, signer, launchToken: LAUNCH, port: 0 });
});

const answerOk = (_: Arrived, response: http.ServerResponse) => json(response, 200, { ok: true });
answer = answerOk;

afterAll(async () => {
  await proxy?.close();
  upstream?.closeAllConnections();
  await new Promise((resolve) => upstream?.close(resolve));
});

afterEach(() => {
  arrived = [];
  answer = answerOk;
});

interface Raw {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
  /** When the first byte of the body and its end arrived (ms, this process's clock). */
  readonly firstByteAt: number;
  readonly endedAt: number;
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
        let firstByteAt = Number.NaN;
        response.on('data', (chunk: Buffer) => {
          if (chunks.length === 0) firstByteAt = performance.now();
          chunks.push(chunk);
        });
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks).toString('utf8'),
            firstByteAt,
            endedAt: performance.now(),
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
  it('sends the pages’ request signed with the user’s keys, and nothing of the browser’s', async () => {
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
    expect(seen?.signature).toMatchObject({
      ok: true,
      signature: { accessKeyId: KEYS.accessKeyId, region: 'eu-west-1', service: 'execute-api' },
    });
    expect(seen?.method).toBe('POST');
    expect(seen?.url).toBe('/stage/v1/jobs?x=1&x=2');
    expect(seen?.body).toBe('{"image":"alpine","command":["true"]}');
    expect(seen?.headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIADASHBOARDTEST\//);
    expect(seen?.headers.authorization).not.toContain(LAUNCH);
    expect(seen?.headers['idempotency-key']).toBe('key-1');
    expect(seen?.headers['content-type']).toBe('application/json');
    for (const name of ['cookie', 'x-forwarded-for', 'origin', 'sec-fetch-site']) {
      expect(seen?.headers[name], name).toBeUndefined();
    }
  });

  it('sends a query as it signed it: a space is %20, never a + another server could read otherwise', async () => {
    // What the pages' URLSearchParams writes for the label filter `team=data eng+ops`.
    const query = new URLSearchParams({ label: 'team=data eng+ops', state: 'RUNNING' }).toString();
    expect(query).toContain('+');

    const reply = await raw(`/v1/executions?${query}`, { headers: withToken() });

    expect(reply.status).toBe(200);
    const [seen] = arrived;
    expect(seen?.url).toBe('/stage/v1/executions?label=team%3Ddata%20eng%2Bops&state=RUNNING');
    expect(seen?.signature.ok).toBe(true);
  });

  it('passes the body on while the API is still writing it, with Ferry’s headers and no cookie', async () => {
    answer = (_, response) => {
      response.writeHead(200, {
        'content-type': 'application/octet-stream',
        'ferry-next-offset': '6',
        'ferry-complete': 'false',
        'set-cookie': 'tracker=1',
      });
      response.write('first\n');
      setTimeout(() => response.end('second\n'), 500);
    };

    const reply = await raw('/v1/executions/ex_1/logs?stream=stdout&offset=0&follow=true', {
      headers: withToken(),
    });

    expect(reply.status).toBe(200);
    expect(reply.body).toBe('first\nsecond\n');
    // The first line came while the API still held the reply open.
    expect(reply.endedAt - reply.firstByteAt).toBeGreaterThan(300);
    expect(reply.headers['ferry-next-offset']).toBe('6');
    expect(reply.headers['ferry-complete']).toBe('false');
    expect(reply.headers['set-cookie']).toBeUndefined();
    expect(reply.headers['x-content-type-options']).toBe('nosniff');
  });

  it('ends the wait upstream when the page goes away', async () => {
    answer = (_, response) => {
      // A follow that has nothing new yet: headers, then a long wait.
      response.writeHead(200, { 'content-type': 'application/octet-stream' });
      response.flushHeaders();
    };
    const request = http.request({
      host: '127.0.0.1',
      port: new URL(proxy.url).port,
      path: '/v1/executions/ex_1/logs?stream=stdout&offset=0&follow=true',
      headers: withToken(),
    });
    request.on('error', () => undefined);
    await new Promise<void>((resolve) => {
      request.once('response', () => resolve());
      request.end();
    });

    request.destroy();

    const [seen] = arrived;
    await expect(
      Promise.race([
        seen?.closed,
        new Promise((_, reject) => setTimeout(() => reject(new Error('still open')), 2000)),
      ]),
    ).resolves.toBeUndefined();
  });

  it('passes a HEAD and a redirect on as they are', async () => {
    answer = (seen, response) => {
      if (seen.method === 'HEAD') {
        response.writeHead(200, { 'content-type': 'application/json', 'content-length': '12' });
        response.end();
        return;
      }
      response.writeHead(303, { location: 'https://bucket.s3.amazonaws.com/key?X-Amz-Signature=abc' });
      response.end();
    };

    const head = await raw('/v1/executions/ex_1', { method: 'HEAD', headers: withToken() });
    const redirect = await raw('/v1/executions/ex_1/logs?stream=stdout', { headers: withToken() });

    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    expect(redirect.status).toBe(303);
    expect(redirect.headers.location).toBe('https://bucket.s3.amazonaws.com/key?X-Amz-Signature=abc');
    expect(arrived.map((seen) => seen.method)).toEqual(['HEAD', 'GET']);
    expect(arrived.every((seen) => seen.signature.ok)).toBe(true);
  });

  it('passes Ferry’s problem documents through as they are', async () => {
    const problem = { type: 'about:blank', title: 'Not Found', status: 404, detail: 'no execution ex_2' };
    answer = (_, response) => json(response, 404, problem, 'application/problem+json');

    const reply = await raw('/v1/executions/ex_2', { headers: withToken() });

    expect(reply.status).toBe(404);
    expect(reply.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(reply.body)).toEqual(problem);
  });

  it('turns API Gateway’s own answers into problem documents that say what it said', async () => {
    const denial =
      'User: arn:aws:iam::123456789012:user/bob is not authorized to perform: execute-api:Invoke';
    answer = (_, response) => json(response, 403, { Message: denial });
    const forbidden = await raw('/v1/node', { headers: withToken() });
    expect(forbidden.status).toBe(403);
    expect(forbidden.headers['content-type']).toBe('application/problem+json');
    expect(detailOf(forbidden)).toBe(
      `the API at ${upstreamUrl} refused the request signed with your AWS credentials: ${denial}`,
    );

    answer = (_, response) => {
      response.writeHead(429, { 'content-type': 'application/json', 'retry-after': '3' });
      response.end(JSON.stringify({ message: 'Too Many Requests' }));
    };
    const throttled = await raw('/v1/node', { headers: withToken() });
    expect(throttled.status).toBe(429);
    expect(throttled.headers['retry-after']).toBe('3');
    expect(JSON.parse(throttled.body)).toMatchObject({
      title: 'Too Many Requests',
      detail: `the API at ${upstreamUrl} answered 429: Too Many Requests`,
    });

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
        { type: 'about:blank', title: 'Unauthorized', status: 401, detail: 'the security token is invalid' },
        'application/problem+json',
      );

    const reply = await raw('/v1/node', { headers: withToken() });

    expect(reply.status).toBe(502);
    expect(reply.headers['www-authenticate']).toBeUndefined();
    expect(detailOf(reply)).toBe(
      `the API at ${upstreamUrl} refused the request signed with your AWS credentials: the security token is invalid`,
    );
  });

  it('says so when the API cannot be reached, or the request cannot be signed', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const lonely = await startDashboardProxy({
      upstream: `http://127.0.0.1:${port}`,
      signer,
      launchToken: LAUNCH,
      port: 0,
    });
    const keyless = await startDashboardProxy({
      upstream: upstreamUrl,
      signer: sigv4Signer({
        region: 'eu-west-1',
        credentials: () => Promise.reject(new Error('the SSO session has expired; run aws sso login')),
      }),
      launchToken: LAUNCH,
      port: 0,
    });
    try {
      const unreachable = await raw('/v1/node', { headers: withToken(), url: lonely.url });
      expect(unreachable.status).toBe(502);
      expect(detailOf(unreachable)).toMatch(
        new RegExp(`^cannot reach Ferry at http://127\\.0\\.0\\.1:${port} \\(.*ECONNREFUSED`),
      );
      const unsigned = await raw('/v1/node', { headers: withToken(), url: keyless.url });
      expect(unsigned.status).toBe(502);
      expect(detailOf(unsigned)).toBe(
        `cannot sign the request for ${upstreamUrl}: the SSO session has expired; run aws sso login`,
      );
      expect(arrived).toEqual([]);
    } finally {
      await lonely.close();
      await keyless.close();
    }
  });

  it('serves the dashboard’s pages itself, under the same policy as `ferry serve`', async () => {
    const page = await raw('/');

    // `npm ci` builds the pages; without them this would be a 503 saying how to build them.
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toContain("default-src 'self'");
    expect(arrived).toEqual([]);
  });
});

describe('refusals: nothing reaches the API', () => {
  it('refuses a request without the launch token, or with another', async () => {
    const none = await raw('/v1/node');
    const wrong = await raw('/v1/node', { headers: { authorization: 'Bearer not-it' } });

    expect(none.status).toBe(401);
    expect(detailOf(none)).toBe(
      'a bearer token is required (Authorization: Bearer <the token `ferry dashboard` printed>)',
    );
    expect(wrong.status).toBe(401);
    expect(detailOf(wrong)).toBe('the bearer token is not valid');
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

  it.each([
    ['/ga4gh/tes/v1/tasks', 404],
    ['/objects/x', 404],
    ['/v1/../objects/x', 404],
    ['/v1/%2e%2e/objects/x', 404],
    ['//attacker.example/v1/node', 404],
    ['http://attacker.example/v1/node', 400],
  ])('forwards only the API the pages call: %s is %i', async (target, status) => {
    const reply = await raw(target, { headers: withToken() });

    expect(reply.status).toBe(status);
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
    expect(large.headers.connection).toBe('close');
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
