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
import type { ReadableStream } from 'node:stream/web';
import { NotFound, UpstreamAnswer, UpstreamFailed, ValidationError } from '#shared/errors.ts';
import { DashboardAssets } from '#shared/http/dashboard.ts';
import {
  bearerTokenOf,
  checkBearer,
  checkHost,
  checkOrigin,
  readBodyOrRefuse,
  requestRules,
  requestTarget,
  sendProblem,
} from '#shared/http/guards.ts';
import { MAX_BODY_BYTES } from '#shared/http/openapi.ts';
import { UsageError } from './args.ts';
import {
  ApiError,
  apiErrorOf,
  FerryClient,
  prepareRequest,
  type RequestSigner,
  reasonOf,
  Unreachable,
} from './client.ts';
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

/** An error reply is read this far, to say what it said. */
const ERROR_BODY_BYTES = 64 * 1024;

export interface DashboardProxyOptions {
  /** The deployed API's base URL (its stage URL). */
  readonly upstream: string;
  /** Signs each forwarded request (SigV4 for an IAM-authorized API). */
  readonly signer: RequestSigner;
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
      if (!response.headersSent) sendProblem(response, error, retryHint(error));
      else response.destroy();
    });
  });

  async function handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const url = requestTarget(request.url ?? '');
    checkHost(request, rules);
    if (assets.answer(request, response, url.pathname)) return;
    if (!url.pathname.startsWith('/v1/')) {
      throw new NotFound(`nothing at ${url.pathname}: this server forwards the API the pages call, /v1/…`);
    }
    checkOrigin(request, rules);
    checkBearer(
      bearerTokenOf(request.headers.authorization),
      options.launchToken,
      'the token `ferry dashboard` printed',
    );
    const method = request.method ?? 'GET';
    let body: string | undefined;
    if (method !== 'GET' && method !== 'HEAD') {
      const bytes = await readBodyOrRefuse(request, response, MAX_BODY_BYTES);
      if (bytes === undefined) return;
      if (!isUtf8(bytes)) {
        throw new ValidationError('the body must be UTF-8 JSON', [{ field: 'body', message: 'not UTF-8' }]);
      }
      body = bytes.toString('utf8');
    }
    await forward(request, response, method, `${url.pathname}${url.search}`, body);
  }

  async function forward(
    request: http.IncomingMessage,
    response: http.ServerResponse,
    method: string,
    pathAndQuery: string,
    body: string | undefined,
  ): Promise<void> {
    // A follow of a job's output waits for new bytes: a page that goes away, at any point from
    // here on (signing may wait on an SSO or instance-role refresh), ends the wait upstream.
    const abort = new AbortController();
    response.once('close', () => abort.abort());
    const headers: Record<string, string> = {};
    for (const name of FORWARDED_REQUEST_HEADERS) {
      const value = request.headers[name];
      if (typeof value === 'string') headers[name] = value;
    }
    let prepared: Awaited<ReturnType<typeof prepareRequest>>;
    try {
      prepared = await prepareRequest(options.upstream, pathAndQuery, {
        method,
        headers,
        signer: options.signer,
        ...(body === undefined ? {} : { body }),
      });
    } catch (error) {
      throw new UpstreamFailed(`cannot sign the request for ${options.upstream}: ${reasonOf(error)}`, {
        cause: error,
      });
    }
    let reply: Response;
    try {
      reply = await fetch(prepared.url, {
        method,
        headers: prepared.headers,
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
    if (reply.status === 401 || reply.status === 403) throw await refusal(reply, options.upstream);
    if (reply.status >= 400 && !reply.headers.get('content-type')?.startsWith('application/problem+json')) {
      // API Gateway's own answer (a throttle, a timed-out integration, a limit), not Ferry's.
      const said = await errorOf(reply);
      throw new UpstreamAnswer(
        reply.status,
        `the API at ${options.upstream} answered ${reply.status}: ${said.message}`,
        reply.headers.get('retry-after') ?? undefined,
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
    // The status goes at once, as the API gave it; a long-polled body follows when it comes.
    response.flushHeaders();
    const stream = Readable.fromWeb(reply.body as ReadableStream);
    stream.once('error', () => response.destroy());
    stream.pipe(response);
  }

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

const retryHint = (error: unknown): Record<string, string> =>
  error instanceof UpstreamAnswer && error.retryAfter !== undefined
    ? { 'retry-after': error.retryAfter }
    : {};

/** What an error reply says, read no further than the first ERROR_BODY_BYTES. */
async function errorOf(reply: Response): Promise<ApiError> {
  const chunks: Buffer[] = [];
  let size = 0;
  if (reply.body !== null) {
    for await (const chunk of reply.body as AsyncIterable<Uint8Array>) {
      chunks.push(Buffer.from(chunk));
      size += chunk.length;
      if (size >= ERROR_BODY_BYTES) break;
    }
  }
  const text = Buffer.concat(chunks).subarray(0, ERROR_BODY_BYTES).toString('utf8');
  return apiErrorOf(reply.status, reply.statusText, text);
}

/**
 * The API refused the credentials this server signs with (IAM said no, or the keys are not
 * valid): a 403 the pages show as it is. A 401 is answered as a bad gateway, because the pages
 * would take it for a wrong launch token and ask for that again.
 */
async function refusal(reply: Response, upstream: string): Promise<Error> {
  const said = await errorOf(reply);
  const message = `the API at ${upstream} refused the request signed with your AWS credentials: ${said.message}`;
  return reply.status === 401 ? new UpstreamFailed(message) : new UpstreamAnswer(403, message);
}

/**
 * `ferry dashboard`: checks that the deployed API answers the user's credentials, then serves
 * the pages until Ctrl-C.
 */
export async function dashboard(
  options: {
    readonly url: string;
    readonly signer?: RequestSigner;
    readonly port?: string;
    readonly region?: string;
  },
  io: Io,
): Promise<number> {
  const port = options.port === undefined ? 0 : Number(options.port);
  if (!/^\d+$/.test(options.port ?? '0') || port > 65535) {
    throw new UsageError(`--port must be a port number, not ${options.port}`, 'dashboard');
  }
  if (options.signer === undefined) {
    throw new UsageError(
      `ferry dashboard is for a Ferry deployed on AWS, and ${options.url} is not an API Gateway URL: ` +
        'give the execute-api URL with --url (or FERRY_URL), or add --sigv4 --region for a custom domain ' +
        '(`ferry serve` shows the dashboard at its own address)',
      'dashboard',
    );
  }
  // A first call before anything is served: wrong keys or a wrong URL are said here, once.
  try {
    await new FerryClient(options.url, undefined, options.signer).json('GET', '/v1/node');
  } catch (error) {
    if (!(error instanceof ApiError || error instanceof Unreachable)) throw error;
    const said = error instanceof ApiError ? `${error.status}: ${error.message}` : error.message;
    io.err.write(`ferry: the API at ${options.url} did not answer the dashboard's first call (${said})\n`);
    return 1;
  }
  const launchToken = randomBytes(24).toString('base64url');
  const proxy = await startDashboardProxy({
    upstream: options.url,
    signer: options.signer,
    launchToken,
    port,
  });
  io.out.write(
    [
      `Ferry's dashboard for ${options.url}, its calls signed with your AWS credentials` +
        `${options.region === undefined ? '' : ` for ${options.region}`}:`,
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
