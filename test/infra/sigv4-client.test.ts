// Calling a deployed Ferry: the CLI signs its requests with SigV4 (service execute-api) as
// API Gateway's IAM authorization expects. A local server stands in for API Gateway and
// checks each signature by computing it again from what actually arrived.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { executeApiRegion, FerryClient, sigv4Signer } from '../../cli/client.ts';
import { main } from '../../cli/main.ts';

const CREDENTIALS = {
  accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
};
const AT = new Date('2026-11-05T12:34:56Z');

interface Received {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

let server: http.Server;
let baseUrl: string;
const received: Received[] = [];
beforeAll(async () => {
  server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      received.push({
        method: request.method ?? '',
        url: request.url ?? '',
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ items: [] }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** The Authorization header a request that arrived should carry, signed again from its parts. */
async function expectedAuthorization(request: Received, region: string): Promise<string | undefined> {
  const signedNames =
    /SignedHeaders=([^,]+)/.exec(String(request.headers.authorization))?.[1]?.split(';') ?? [];
  const headers = Object.fromEntries(
    signedNames.filter((name) => name !== 'host').map((name) => [name, String(request.headers[name])]),
  );
  const signer = sigv4Signer({ region, credentials: CREDENTIALS, now: () => AT });
  const signed = await signer.sign({
    method: request.method,
    url: new URL(request.url, baseUrl),
    headers,
    ...(request.body === '' ? {} : { body: request.body }),
  });
  return signed.authorization;
}

describe('SigV4 signing', () => {
  it('signs with the execute-api service, the region and a SHA-256 HMAC', async () => {
    const signer = sigv4Signer({ region: 'eu-west-1', credentials: CREDENTIALS, now: () => AT });
    const headers = await signer.sign({
      method: 'POST',
      url: new URL('https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1/jobs'),
      headers: { 'content-type': 'application/json' },
      body: '{"image":"alpine","command":["true"]}',
    });
    expect(headers.authorization).toMatch(
      /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/20261105\/eu-west-1\/execute-api\/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=[0-9a-f]{64}$/,
    );
    expect(headers['x-amz-date']).toBe('20261105T123456Z');
    expect(headers.host).toBeUndefined();
  });

  it('carries a session token when the credentials have one', async () => {
    const signer = sigv4Signer({
      region: 'us-east-1',
      credentials: async () => ({ ...CREDENTIALS, sessionToken: 'token-from-sso' }),
      now: () => AT,
    });
    const headers = await signer.sign({
      method: 'GET',
      url: new URL('https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/v1/node'),
      headers: {},
    });
    expect(headers['x-amz-security-token']).toBe('token-from-sso');
    expect(headers.authorization).toContain('x-amz-security-token');
  });

  it('finds the region in an execute-api host, and nothing in any other', () => {
    expect(executeApiRegion('https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com')).toBe('eu-west-1');
    expect(executeApiRegion('https://a1b2c3d4e5.execute-api.cn-north-1.amazonaws.com.cn/')).toBe(
      'cn-north-1',
    );
    expect(executeApiRegion('https://ferry.example.com')).toBeUndefined();
    expect(executeApiRegion('http://127.0.0.1:8080')).toBeUndefined();
    expect(executeApiRegion('not a url')).toBeUndefined();
  });

  it('the client sends what it signed: path, query, body and headers verify on arrival', async () => {
    const client = new FerryClient(
      `${baseUrl}/`,
      undefined,
      sigv4Signer({ region: 'eu-west-1', credentials: CREDENTIALS, now: () => AT }),
    );
    received.length = 0;
    await client.json('GET', '/v1/executions?state=QUEUED&state=RUNNING&limit=5');
    await client.json(
      'POST',
      '/v1/jobs',
      { image: 'alpine:3.20', command: ['echo', 'hé'] },
      { 'idempotency-key': 'k1' },
    );
    expect(received.map((r) => `${r.method} ${r.url}`)).toEqual([
      'GET /v1/executions?state=QUEUED&state=RUNNING&limit=5',
      'POST /v1/jobs',
    ]);
    for (const request of received) {
      expect(request.headers.authorization).toMatch(/^AWS4-HMAC-SHA256 /);
      expect(request.headers.authorization).toBe(await expectedAuthorization(request, 'eu-west-1'));
    }
    expect(received[1]?.headers.authorization).toMatch(
      /SignedHeaders=content-type;host;idempotency-key;x-amz-date,/,
    );
  });

  it('the CLI signs with --sigv4 using the standard credential chain, and needs a region to do so', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, {
      AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
    });
    delete process.env.AWS_SESSION_TOKEN;
    delete process.env.AWS_PROFILE;
    try {
      const out: string[] = [];
      const err: string[] = [];
      const io = {
        out: { write: (text: string) => out.push(text) } as unknown as NodeJS.WritableStream,
        err: { write: (text: string) => err.push(text) } as unknown as NodeJS.WritableStream,
        env: {},
      };
      received.length = 0;
      expect(await main(['ls', '--url', baseUrl, '--sigv4', '--region', 'eu-north-1', '--json'], io)).toBe(0);
      expect(JSON.parse(out.join(''))).toEqual({ items: [] });
      expect(received[0]?.headers.authorization).toMatch(
        /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/eu-north-1\/execute-api\/aws4_request, /,
      );

      expect(await main(['ls', '--url', baseUrl, '--sigv4'], io)).toBe(2);
      expect(err.join('')).toMatch(/--sigv4 needs --region/);

      received.length = 0;
      expect(await main(['ls', '--url', baseUrl, '--json'], io)).toBe(0);
      expect(received[0]?.headers.authorization).toBeUndefined();
    } finally {
      for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
      Object.assign(process.env, saved);
    }
  });
});
