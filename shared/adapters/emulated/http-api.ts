// The emulated API Gateway HTTP API in front of the `api` function, behaving as the
// synthesized one does: one `ANY /{proxy+}` route with IAM authorization (the SigV4 signature
// is verified against the emulator's credentials, and the caller must be allowed
// execute-api:Invoke), payload format 2.0 events with the caller in
// requestContext.authorizer.iam, a 10 MB request limit, the 30 s integration timeout, and
// API Gateway's own answers when the integration fails.
import { randomUUID } from 'node:crypto';
import type http from 'node:http';
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { apiGatewayEvent } from '../../http/api-gateway-event.ts';
import type { Logger } from '../../logger.ts';
import type { InvokeOutcome } from './lambda-runtime.ts';
import { LoopbackServer } from './loopback-server.ts';

/** API Gateway refuses a larger request body. */
export const MAX_REQUEST_BYTES = 10 * 1024 * 1024;
/** HTTP APIs end an integration after at most 30 s. */
export const INTEGRATION_TIMEOUT_MS = 30_000;

export interface Caller {
  readonly arn: string;
  readonly accessKey: string;
  readonly accountId: string;
  readonly userId: string;
}

export type Authorization =
  | { readonly ok: true; readonly caller: Caller }
  | { readonly ok: false; readonly message: string };

export interface HttpApiOptions {
  readonly apiId: string;
  readonly region: string;
  /** Checks the request's signature and the caller's right to invoke the route. */
  readonly authorize: (request: {
    method: string;
    url: string;
    headers: Record<string, string>;
    body: Buffer;
    routeArn: string;
  }) => Promise<Authorization>;
  readonly invoke: (event: unknown) => Promise<InvokeOutcome>;
  readonly integrationTimeoutMs?: number;
  readonly log: Logger;
}

export class EmulatedHttpApi {
  private readonly front = new LoopbackServer(
    (request, response) => this.handle(request, response),
    (error, response) => {
      this.options.log.error('emulated HTTP API failed a request', { error });
      send(response, 500, { message: 'Internal Server Error' });
    },
  );

  constructor(private readonly options: HttpApiOptions) {}

  get url(): string {
    return this.front.url;
  }

  listen(port = 0): Promise<string> {
    return this.front.listen(port);
  }

  close(): Promise<void> {
    return this.front.close();
  }

  private async handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const requestId = randomUUID();
    response.setHeader('apigw-requestid', requestId);
    const target = request.url ?? '/';
    const [path = '/', query = ''] = splitOnce(target, '?');
    const method = request.method ?? 'GET';

    const body = await readLimited(request, MAX_REQUEST_BYTES);
    if (body === undefined) return send(response, 413, { message: 'Request Entity Too Large' });
    // The one route is ANY /{proxy+}: the bare root matches nothing.
    if (path === '/' || path === '') return send(response, 404, { message: 'Not Found' });

    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers)) {
      if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(',') : value;
    }
    const routeArn = `arn:aws:execute-api:${this.options.region}:*:${this.options.apiId}/$default/${method}${path}`;
    const authorization = await this.options.authorize({ method, url: target, headers, body, routeArn });
    if (!authorization.ok) return send(response, 403, { message: authorization.message });

    const event = apiGatewayEvent({
      method,
      path: decodeURIComponent(path),
      query,
      headers,
      ...(body.length === 0 ? {} : { body }),
      caller: authorization.caller.arn,
      accountId: authorization.caller.accountId,
      accessKey: authorization.caller.accessKey,
      userId: authorization.caller.userId,
      apiId: this.options.apiId,
      sourceIp: request.socket.remoteAddress ?? '127.0.0.1',
      protocol: `HTTP/${request.httpVersion}`,
    });
    const timeoutMs = this.options.integrationTimeoutMs ?? INTEGRATION_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const outcome = await Promise.race([this.options.invoke(event), timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      this.options.log.warn('integration timed out', { path, timeoutMs });
      return send(response, 503, { message: 'Service Unavailable' });
    }
    if (!outcome.ok) {
      this.options.log.warn('integration failed', { path, error: outcome.error });
      return send(response, 500, { message: 'Internal Server Error' });
    }
    this.answer(response, outcome.value);
  }

  /** Payload format 2.0: a result with a statusCode is the response; anything else is a JSON body. */
  private answer(response: http.ServerResponse, value: unknown): void {
    const result =
      value !== null && typeof value === 'object' && 'statusCode' in value
        ? (value as APIGatewayProxyStructuredResultV2)
        : { statusCode: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify(value) };
    const bytes =
      result.body === undefined
        ? Buffer.alloc(0)
        : Buffer.from(result.body, result.isBase64Encoded === true ? 'base64' : 'utf8');
    const headers: Record<string, string | string[]> = {};
    for (const [name, header] of Object.entries(result.headers ?? {})) headers[name] = String(header);
    if (result.cookies !== undefined && result.cookies.length > 0) headers['set-cookie'] = result.cookies;
    headers['content-length'] = String(bytes.length);
    response.writeHead(result.statusCode ?? 200, headers);
    response.end(bytes);
  }
}

function send(response: http.ServerResponse, status: number, body: unknown): void {
  if (response.headersSent) {
    response.end();
    return;
  }
  const bytes = Buffer.from(JSON.stringify(body));
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': String(bytes.length) });
  response.end(bytes);
}

function splitOnce(text: string, separator: string): [string, string] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, ''] : [text.slice(0, at), text.slice(at + 1)];
}

/** The body, or undefined once it grows past `limit` (the rest is drained, not kept). */
async function readLimited(request: http.IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > limit) over = true;
    else chunks.push(chunk as Buffer);
  }
  return over ? undefined : Buffer.concat(chunks);
}
