// `ferry dashboard`: the dashboard's pages served on this machine for a Ferry deployed on AWS,
// whose API takes IAM-signed requests only. The pages' API calls come here and go on to the
// deployed API signed with the user's AWS credentials, so the stack gains nothing public.
//
// The server holds the power of those credentials, so only this machine's browser may use it:
// it listens on loopback and answers only to loopback names (no DNS rebinding), refuses requests
// from other sites' pages, and forwards only requests that carry the token printed at launch,
// which no other page can know. That token never leaves this machine; nothing of the browser's
// (cookies, its own Authorization) is sent on.

import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { FerryError, Forbidden, NotFound, UpstreamFailed, ValidationError } from '#shared/errors.ts';
import { DashboardAssets } from '#shared/http/dashboard.ts';
import {
  bearerTokenOf,
  checkBearer,
  checkHost,
  checkOrigin,
  readBody,
  requestRules,
  requestTarget,
} from '#shared/http/guards.ts';
import { MAX_BODY_BYTES } from '#shared/http/openapi.ts';
import { errorResponse } from '#shared/http/problem.ts';
import { UsageError } from './args.ts';
import { ApiError, FerryClient, type RequestSigner, Unreachable } from './client.ts';
import type { Io } from './main.ts';

/** Where the dashboard's own server listens: this machine only. */
const LOOPBACK = '127.0.0.1';

/** What the pages send that the API reads; everything else a browser adds stays here. */
const FORWARDED_REQUEST_HEADERS = ['accept', 'content-type', 'idempotency-key'] as const;

/** What the API answers with that the pages read; Ferry's own headers (`ferry-…`) go too. */
const FORWARDED_REPLY_HEADERS = new Set([
  'allow',
  'apigw-requestid',
  'cache-control',
  'content-type',
  'idempotent-replayed',
  'location',
  'retry-after',
]);

/** An error reply API Gateway writes itself (`{"message": …}`) is read this far, to say what it said. */
const GATEWAY_ERROR_BYTES = 64 * 1024;

export interface DashboardProxyOptions {
  /** The deployed API's base URL (its stage URL). */
  readonly upstream: string;
  /** Signs each forwarded request (SigV4 for an IAM-authorized API). */
  readonly signer?: RequestSigner;
  /** A bearer token for an API that takes one instead (a remote `ferry serve`). */
  readonly upstreamToken?: string;
  /** The token the pages must present. */
  readonly launchToken: string;
  /** 0 for a free port. */
  readonly port: number;
  readonly assets?: DashboardAssets;
}

export interface DashboardProxy {
  /** The dashboard's address, without the token. */
  readonly url: string;
  close(): Promise<void>;
}

export async function startDashboardProxy(options: DashboardProxyOptions): Promise<DashboardProxy> {
  const assets = options.assets ?? DashboardAssets.load();
  let rules = requestRules(LOOPBACK, options.port);
  const server = http.createServer((request, response) => {
    handle(request, response).catch((error) => {
      if (!response.headersSent) send(response, error);
      else response.destroy();
    });
  });

  async function handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const url = requestTarget(request.url ?? '');
    checkHost(request, rules);
    const method = request.method ?? 'GET';
    if ((method === 'GET' || method === 'HEAD') && DashboardAssets.claims(url.pathname)) {
      const page = assets.serve(url.pathname);
      response.writeHead(page.status, { ...page.headers, 'content-length': page.body.length });
      response.end(method === 'HEAD' ? undefined : page.body);
      return;
    }
    if (!url.pathname.startsWith('/v1/')) {
      throw new NotFound(`nothing at ${url.pathname}: this server forwards the API the pages call, /v1/…`);
    }
    checkOrigin(request, rules);
    checkBearer(
      bearerTokenOf(request.headers.authorization),
      options.launchToken,
      'the token `ferry dashboard` printed',
    );
    const body = method === 'GET' || method === 'HEAD' ? undefined : await readBody(request, MAX_BODY_BYTES);
    if (body !== undefined && !isUtf8(body)) {
      throw new ValidationError('the body must be UTF-8 JSON', [{ field: 'body', message: 'not UTF-8' }]);
    }
    await forward(request, response, method, url, body?.toString('utf8'));
  }

  async function forward(
    request: http.IncomingMessage,
    response: http.ServerResponse,
    method: string,
    url: URL,
    body: string | undefined,
  ): Promise<void> {
    const target = new URL(`${options.upstream.replace(/\/+$/, '')}${url.pathname}${url.search}`);
    let headers: Record<string, string> = {};
    for (const name of FORWARDED_REQUEST_HEADERS) {
      const value = request.headers[name];
      if (typeof value === 'string') headers[name] = value;
    }
    if (options.upstreamToken !== undefined && options.signer === undefined) {
      headers.authorization = `Bearer ${options.upstreamToken}`;
    }
    if (options.signer !== undefined) {
      try {
        headers = await options.signer.sign({
          method,
          url: target,
          headers,
          ...(body === undefined ? {} : { body }),
        });
      } catch (error) {
        throw new UpstreamFailed(`cannot sign the request for ${options.upstream}: ${reasonOf(error)}`, {
          cause: error,
        });
      }
    }
    // A follow of a job's output waits for new bytes; a page that goes away stops the wait.
    const abort = new AbortController();
    response.once('close', () => abort.abort());
    let reply: Response;
    try {
      reply = await fetch(target, {
        method,
        headers,
        redirect: 'manual',
        signal: abort.signal,
        ...(body === undefined ? {} : { body }),
      });
    } catch (error) {
      if (abort.signal.aborted) return;
      throw new UpstreamFailed(`cannot reach Ferry at ${options.upstream} (${reasonOf(error)})`, {
        cause: error,
      });
    }
    const type = reply.headers.get('content-type') ?? '';
    if (reply.status >= 400 && !type.startsWith('application/problem+json')) {
      throw await gatewayRefusal(reply, options.upstream);
    }
    if (reply.status === 401) {
      // The pages would take it for a wrong launch token; it is the API refusing this server.
      throw new UpstreamFailed(
        `Ferry at ${options.upstream} refused the credentials this dashboard sends: ${await detailOf(reply)}`,
      );
    }
    const out: Record<string, string> = { 'x-content-type-options': 'nosniff' };
    for (const [name, value] of reply.headers) {
      if (FORWARDED_REPLY_HEADERS.has(name) || name.startsWith('ferry-')) out[name] = value;
    }
    out['cache-control'] ??= 'no-store';
    response.writeHead(reply.status, out);
    if (reply.body === null || method === 'HEAD') {
      response.end();
      return;
    }
    const stream = Readable.fromWeb(reply.body as import('node:stream/web').ReadableStream);
    stream.once('error', () => response.destroy());
    stream.pipe(response);
  }

  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new UsageError(
          error.code === 'EADDRINUSE'
            ? `port ${options.port} is in use; give another with --port, or none for a free one`
            : `cannot listen on ${LOOPBACK}:${options.port} (${error.code ?? error.message})`,
          'dashboard',
        ),
      ),
    );
    server.listen(options.port, LOOPBACK, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  rules = requestRules(LOOPBACK, port);
  return {
    url: `http://${LOOPBACK}:${port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function send(response: http.ServerResponse, error: unknown): void {
  const reply = errorResponse(error);
  response.writeHead(reply.statusCode ?? 500, reply.headers as Record<string, string>);
  response.end(reply.body);
}

const reasonOf = (error: unknown): string =>
  (error as Error & { cause?: Error }).cause?.message ?? (error as Error).message ?? String(error);

/** What an error reply says: a problem's detail, API Gateway's message, or its status. */
async function detailOf(reply: Response): Promise<string> {
  const text = await readSome(reply, GATEWAY_ERROR_BYTES);
  try {
    const parsed = JSON.parse(text) as { detail?: unknown; message?: unknown; Message?: unknown };
    const said = parsed.detail ?? parsed.message ?? parsed.Message;
    if (typeof said === 'string' && said !== '') return said;
  } catch {
    // Not JSON: the text itself, if short, is what there is.
  }
  return text.trim().slice(0, 300) || `${reply.status} ${reply.statusText}`;
}

/**
 * An error API Gateway answered itself (an IAM denial, a throttle, a timed-out integration), as
 * a problem document the pages can show. A 401 or 403 is about the credentials this server signs
 * with, so it names them.
 */
async function gatewayRefusal(reply: Response, upstream: string): Promise<Error> {
  const detail = await detailOf(reply);
  if (reply.status === 401 || reply.status === 403) {
    const message = `the API at ${upstream} refused the request signed with your AWS credentials: ${detail}`;
    // A 401 would send the pages back to asking for the launch token, which is not what failed.
    return reply.status === 401 ? new UpstreamFailed(message) : new Forbidden(message);
  }
  return new GatewayAnswer(reply.status, `the API at ${upstream} answered ${reply.status}: ${detail}`);
}

/** An error API Gateway answered itself, passed on with its own status. */
class GatewayAnswer extends FerryError {
  readonly code = 'upstream-answer';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function readSome(reply: Response, limit: number): Promise<string> {
  if (reply.body === null) return '';
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of reply.body as AsyncIterable<Uint8Array>) {
    chunks.push(Buffer.from(chunk));
    size += chunk.length;
    if (size >= limit) break;
  }
  return Buffer.concat(chunks).subarray(0, limit).toString('utf8');
}

/**
 * `ferry dashboard`: checks the deployed API answers the user's credentials, then serves the
 * pages until Ctrl-C.
 */
export async function dashboard(
  options: {
    readonly url: string;
    readonly signer?: RequestSigner;
    readonly token?: string;
    readonly port?: string;
    readonly region?: string;
  },
  io: Io,
): Promise<number> {
  const port = options.port === undefined ? 0 : Number(options.port);
  if (!/^\d+$/.test(options.port ?? '0') || port > 65535) {
    throw new UsageError(`--port must be a port number, not ${options.port}`, 'dashboard');
  }
  if (options.signer === undefined && options.token === undefined) {
    throw new UsageError(
      `ferry dashboard is for a deployed Ferry, and ${options.url} is not an API Gateway URL: ` +
        'give the execute-api URL with --url (or FERRY_URL), or add --sigv4 --region for a custom domain ' +
        '(a local `ferry serve` shows the dashboard at its own address)',
      'dashboard',
    );
  }
  // A first call before anything is served: wrong keys or a wrong URL are said here, once.
  const probe = new FerryClient(options.url, options.token, options.signer);
  try {
    await probe.json('GET', '/v1/node');
  } catch (error) {
    if (error instanceof ApiError || error instanceof Unreachable) {
      const said = error instanceof ApiError ? `${error.status}: ${error.message}` : error.message;
      io.err.write(`ferry: the API at ${options.url} did not answer the dashboard's first call (${said})\n`);
      return 1;
    }
    throw error;
  }
  const launchToken = randomBytes(24).toString('base64url');
  const proxy = await startDashboardProxy({
    upstream: options.url,
    launchToken,
    port,
    ...(options.signer === undefined ? {} : { signer: options.signer }),
    ...(options.token === undefined ? {} : { upstreamToken: options.token }),
  });
  const how =
    options.signer === undefined
      ? 'with the bearer token you gave'
      : `signed with your AWS credentials${options.region === undefined ? '' : ` for ${options.region}`}`;
  io.out.write(
    [
      `Ferry's dashboard for ${options.url}, its calls ${how}:`,
      `  ${proxy.url}/#token=${launchToken}`,
      'Open that address in a browser on this machine; the token in it lets only that browser in.',
      'Ctrl-C stops it.',
      '',
    ].join('\n'),
  );
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await proxy.close();
  return 0;
}
