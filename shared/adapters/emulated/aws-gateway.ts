// The emulated deployment's AWS endpoint: every AWS request a function or a task makes comes
// here. It tells who is calling from the SigV4 credential, asks the IAM policy simulator
// whether that principal's policies (and the resource's own policy) allow what the request
// needs, records the call and the verdict, refuses what IAM would refuse in the service's own
// error format, and forwards the rest to the emulator that serves the service. ECS calls are
// also handed to the Fargate task realiser, so a RunTask starts real containers and
// DescribeTasks reports what those containers did. It also serves the task role's
// credentials to containers, as Fargate's credential endpoint does.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { Task } from '@aws-sdk/client-ecs';
import type { Logger } from '../../logger.ts';
import { type AwsRequestFacts, describeAwsRequest, type ResourceLookup } from './aws-request.ts';
import { checkAuthorization, type PrincipalPolicies } from './iam-check.ts';
import { LoopbackServer } from './loopback-server.ts';
import { type EmulatorKey, resign } from './resign.ts';
import type { PolicyDocument } from './template.ts';

export interface Principal extends PrincipalPolicies {
  /** A short name for records and messages: the function or role it stands for. */
  readonly name: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
  /** The emulator's own calls (provisioning, ECS's events): forwarded without a check. */
  readonly internal?: boolean;
}

export interface RecordedAuthorization {
  readonly action: string;
  readonly resource: string;
  readonly context: Readonly<Record<string, string | string[]>>;
  readonly allowed: boolean;
  readonly explanation: string;
}

export interface RecordedCall {
  readonly principal: string;
  readonly service: string;
  readonly operation: string;
  readonly authorizations: readonly RecordedAuthorization[];
  /** The answer's status, as the caller saw it. */
  readonly status: number;
  readonly at: string;
  /** From the request's arrival to its answer, the emulator's time included. */
  readonly durationMs: number;
}

/** What the gateway tells the Fargate realiser, and asks it. */
export interface EcsHooks {
  registered(definitionArn: string, request: Record<string, unknown>): void;
  ranTasks(request: Record<string, unknown>, tasks: readonly Record<string, unknown>[]): void;
  stopTask(taskArn: string, reason: string | undefined): void;
  /** The realised task's view, laid over the emulator's DescribeTasks answer. */
  describe(taskArn: string): Task | undefined;
}

export interface GatewayOptions {
  /** The base URL of the emulator that serves a service (by SigV4 signing name). */
  readonly upstream: (service: string) => string;
  /** The key every forwarded request is signed with again: the emulated account's own. */
  readonly emulatorKey: EmulatorKey;
  readonly lookup: ResourceLookup;
  /** A resource's own policy (bucket, queue), by the ARN of the resource. */
  readonly resourcePolicy: (arn: string) => PolicyDocument | undefined;
  /**
   * Fargate's task launch rate, a token bucket per account and region: `burst` tasks at once,
   * refilled at `perSecond`. A RunTask past it is refused with ThrottlingException.
   */
  readonly launchRate?: { readonly burst: number; readonly perSecond: number };
  readonly log: Logger;
}

const CREDENTIALS_PATH = '/_emulator/credentials/';

export class AwsGateway {
  readonly calls: RecordedCall[] = [];
  private readonly principals = new Map<string, Principal>();
  private readonly credentialTokens = new Map<string, string>();
  private readonly front = new LoopbackServer(
    (request, response) => this.handle(request, response),
    (error, response) => {
      this.options.log.error('emulated AWS endpoint failed a request', { error });
      if (!response.headersSent) response.writeHead(500, { 'content-type': 'text/plain' });
      response.end(String(error));
    },
  );
  private ecs: EcsHooks | undefined;
  /** DynamoDB calls in flight, one after another (see `handle`). */
  private dynamodbTail: Promise<unknown> = Promise.resolve();
  /** RunTask answers by client token: ECS's idempotency, which moto does not keep. */
  private readonly runTaskTokens = new Map<
    string,
    Promise<{ request: string; status: number; headers: Record<string, string>; body: Buffer }>
  >();

  /** RunTask calls refused by the launch rate. */
  throttledLaunches = 0;
  private readonly launchTokens: TokenBucket | undefined;

  constructor(private readonly options: GatewayOptions) {
    this.launchTokens =
      options.launchRate === undefined
        ? undefined
        : new TokenBucket(options.launchRate.burst, options.launchRate.perSecond);
  }

  /** Hands ECS's answers to the Fargate realiser from now on. */
  realiseTasksWith(hooks: EcsHooks): void {
    this.ecs = hooks;
  }

  get url(): string {
    return this.front.url;
  }

  addPrincipal(principal: Principal): void {
    this.principals.set(principal.accessKeyId, principal);
  }

  removePrincipal(accessKeyId: string): void {
    this.principals.delete(accessKeyId);
    for (const [token, key] of this.credentialTokens)
      if (key === accessKeyId) this.credentialTokens.delete(token);
  }

  principalFor(accessKeyId: string): Principal | undefined {
    return this.principals.get(accessKeyId);
  }

  /** A URL that hands out `principal`'s credentials, for AWS_CONTAINER_CREDENTIALS_FULL_URI. */
  credentialsUrl(principal: Principal): string {
    const token = randomBytes(16).toString('hex');
    this.credentialTokens.set(token, principal.accessKeyId);
    return `${this.front.url}${CREDENTIALS_PATH}${token}`;
  }

  listen(port = 0): Promise<string> {
    return this.front.listen(port);
  }

  close(): Promise<void> {
    return this.front.close();
  }

  private async handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const url = request.url ?? '/';
    if (url.startsWith(CREDENTIALS_PATH)) return this.serveCredentials(url, response);
    const started = performance.now();
    const body = await readBody(request);
    const headers = lowerCaseHeaders(request.headers);
    const raw = { method: request.method ?? 'GET', url, headers, body };
    let facts: AwsRequestFacts;
    try {
      facts = describeAwsRequest(raw, this.options.lookup);
    } catch (error) {
      this.options.log.error('a request the emulator cannot read', { url, error });
      return reply(response, 400, { 'content-type': 'text/plain' }, Buffer.from(String(error)));
    }
    const principal = facts.accessKeyId === undefined ? undefined : this.principals.get(facts.accessKeyId);
    if (principal === undefined) {
      this.record('anonymous', facts, [], 403, started);
      return this.deny(
        response,
        facts,
        `no principal has the access key ${facts.accessKeyId ?? '(none)'}`,
        headers,
      );
    }
    let verdicts: RecordedAuthorization[] = [];
    if (principal.internal !== true) {
      verdicts = await Promise.all(
        facts.authorizations.map(async (authorization) => {
          const verdict = await checkAuthorization(
            principal,
            authorization,
            this.options.resourcePolicy(resourceOwning(authorization.resource)),
          );
          return { ...authorization, ...verdict };
        }),
      );
      const denied = verdicts.find((v) => !v.allowed);
      if (denied !== undefined) {
        this.record(principal.name, facts, verdicts, 403, started);
        this.options.log.warn('denied by IAM', {
          principal: principal.name,
          explanation: denied.explanation,
        });
        return this.deny(response, facts, denied.explanation, headers);
      }
    }

    const token =
      facts.service === 'ecs' && facts.operation === 'RunTask' ? runTaskToken(raw.body) : undefined;
    if (token !== undefined && this.runTaskTokens.has(token.value)) {
      // A RunTask with a token seen before starts nothing: the same request gets the first
      // answer again, another one is refused as ECS refuses it.
      const first = await this.runTaskTokens.get(token.value);
      if (first !== undefined && first.request === token.request) {
        this.record(principal.name, facts, verdicts, first.status, started);
        return reply(response, first.status, first.headers, first.body);
      }
      this.record(principal.name, facts, verdicts, 400, started);
      return reply(
        response,
        400,
        { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-errortype': 'ConflictException' },
        Buffer.from(
          JSON.stringify({
            __type: 'ConflictException',
            message: 'The specified client token has already been used with different parameters.',
          }),
        ),
      );
    }
    if (facts.service === 'ecs' && facts.operation === 'RunTask' && this.launchTokens !== undefined) {
      if (!this.launchTokens.take(taskCount(raw.body))) {
        this.throttledLaunches += 1;
        this.record(principal.name, facts, verdicts, 400, started);
        return reply(
          response,
          400,
          { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-errortype': 'ThrottlingException' },
          Buffer.from(JSON.stringify({ __type: 'ThrottlingException', message: 'Rate exceeded' })),
        );
      }
    }
    // DynamoDB isolates each transaction; moto does not (it checks and writes in whichever
    // request thread gets there, and under load answers with an HTML error page). Taking its
    // calls one at a time gives the isolation the functions rely on.
    const forwarded =
      facts.service === 'dynamodb'
        ? this.oneAtATime(() => this.forward(facts.service, raw))
        : this.forward(facts.service, raw);
    if (token !== undefined) {
      const kept = forwarded.then((answer) => ({ request: token.request, ...answer }));
      this.runTaskTokens.set(token.value, kept);
      // A failed RunTask leaves its token free, as ECS keeps only what it accepted.
      void kept.then(
        (answer) => answer.status !== 200 && this.runTaskTokens.delete(token.value),
        () => this.runTaskTokens.delete(token.value),
      );
    }
    const upstream = await forwarded;
    let { status, body: answer } = upstream;
    const answerHeaders = { ...upstream.headers };

    if (
      principal.internal !== true &&
      status === 404 &&
      facts.service === 's3' &&
      (facts.operation === 'GetObject' || facts.operation === 'HeadObject')
    ) {
      // S3 answers a missing key with 403, not 404, to whoever may not list the bucket.
      const listing = await this.mayListKey(principal, facts);
      if (!listing.allowed) {
        verdicts = [...verdicts, { ...listing, allowed: false }];
        this.record(principal.name, facts, verdicts, 403, started);
        return this.deny(response, facts, `the key is missing and ${listing.explanation}`, headers);
      }
    }
    if (facts.service === 'ecs' && status === 200 && this.ecs !== undefined) {
      answer = this.ecsHook(facts.operation, raw.body, answer, this.ecs);
      answerHeaders['content-length'] = String(answer.length);
    }
    this.record(principal.name, facts, verdicts, status, started);
    reply(response, status, answerHeaders, answer);
  }

  /** Passes a request on to the emulator of its service, signed again with the emulator's key. */
  private async forward(service: string, raw: Parameters<typeof forward>[1]) {
    const base = this.options.upstream(service);
    const signed = await resign(raw, {
      host: new URL(base).host,
      service,
      region: this.options.lookup.region,
      key: this.options.emulatorKey,
    });
    return forward(base, signed);
  }

  private oneAtATime<T>(call: () => Promise<T>): Promise<T> {
    const result = this.dynamodbTail.then(call, call);
    this.dynamodbTail = result.catch(() => undefined);
    return result;
  }

  private async mayListKey(principal: Principal, facts: AwsRequestFacts) {
    const object = facts.authorizations[0]?.resource ?? '';
    const [, bucket = '', key = ''] = /^arn:aws:s3:::([^/]+)\/(.*)$/s.exec(object) ?? [];
    const authorization = {
      action: 's3:ListBucket',
      resource: `arn:aws:s3:::${bucket}`,
      context: { 's3:prefix': key },
    };
    const verdict = await checkAuthorization(
      principal,
      authorization,
      this.options.resourcePolicy(authorization.resource),
    );
    return { ...authorization, ...verdict };
  }

  private ecsHook(operation: string, requestBody: Buffer, answer: Buffer, ecs: EcsHooks): Buffer {
    const input = JSON.parse(requestBody.toString('utf8') || '{}') as Record<string, unknown>;
    const output = JSON.parse(answer.toString('utf8') || '{}') as Record<string, unknown>;
    switch (operation) {
      case 'RegisterTaskDefinition': {
        const arn = (output.taskDefinition as { taskDefinitionArn?: string } | undefined)?.taskDefinitionArn;
        if (arn !== undefined) ecs.registered(arn, input);
        return answer;
      }
      case 'RunTask':
        ecs.ranTasks(input, (output.tasks as Record<string, unknown>[] | undefined) ?? []);
        return answer;
      case 'StopTask': {
        const arn = (output.task as { taskArn?: string } | undefined)?.taskArn ?? String(input.task);
        ecs.stopTask(arn, input.reason === undefined ? undefined : String(input.reason));
        return answer;
      }
      case 'DescribeTasks': {
        const tasks = (output.tasks as Record<string, unknown>[] | undefined) ?? [];
        output.tasks = tasks.map((task) => {
          const realised = ecs.describe(String(task.taskArn));
          return realised === undefined ? task : { ...task, ...wireTask(realised) };
        });
        return Buffer.from(JSON.stringify(output));
      }
      default:
        return answer;
    }
  }

  private serveCredentials(url: string, response: http.ServerResponse): void {
    const key = this.credentialTokens.get(url.slice(CREDENTIALS_PATH.length));
    const principal = key === undefined ? undefined : this.principals.get(key);
    if (principal === undefined) {
      reply(response, 404, {}, Buffer.from('{}'));
      return;
    }
    const body = {
      AccessKeyId: principal.accessKeyId,
      SecretAccessKey: principal.secretAccessKey,
      Token: principal.sessionToken ?? '',
      Expiration: new Date(Date.now() + 6 * 3600_000).toISOString(),
      RoleArn: principal.principalArn,
    };
    reply(response, 200, { 'content-type': 'application/json' }, Buffer.from(JSON.stringify(body)));
  }

  private record(
    principal: string,
    facts: AwsRequestFacts,
    authorizations: readonly RecordedAuthorization[],
    status: number,
    started: number,
  ): void {
    this.calls.push({
      principal,
      service: facts.service,
      operation: facts.operation,
      authorizations,
      status,
      at: new Date().toISOString(),
      durationMs: performance.now() - started,
    });
  }

  /** An access denial as the service itself words it, so the SDK raises its usual error. */
  private deny(
    response: http.ServerResponse,
    facts: AwsRequestFacts,
    message: string,
    requestHeaders: Record<string, string>,
  ): void {
    const id = randomBytes(8).toString('hex');
    if (facts.service === 's3') {
      const xml = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>${escapeXml(
        message,
      )}</Message><RequestId>${id}</RequestId></Error>`;
      reply(response, 403, { 'content-type': 'application/xml', 'x-amz-request-id': id }, Buffer.from(xml));
      return;
    }
    if (facts.service === 'lambda') {
      reply(
        response,
        403,
        { 'content-type': 'application/json', 'x-amzn-errortype': 'AccessDeniedException' },
        Buffer.from(JSON.stringify({ Type: 'User', Message: message })),
      );
      return;
    }
    const queryProtocol = (requestHeaders['content-type'] ?? '').startsWith(
      'application/x-www-form-urlencoded',
    );
    if (queryProtocol) {
      const xml = `<?xml version="1.0"?><ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>${escapeXml(
        message,
      )}</Message></Error><RequestId>${id}</RequestId></ErrorResponse>`;
      reply(response, 403, { 'content-type': 'text/xml' }, Buffer.from(xml));
      return;
    }
    const type =
      facts.service === 'sqs' ? 'com.amazon.coral.service#AccessDeniedException' : 'AccessDeniedException';
    reply(
      response,
      400,
      {
        'content-type':
          facts.service === 'dynamodb' ? 'application/x-amz-json-1.0' : 'application/x-amz-json-1.1',
        'x-amzn-requestid': id,
        ...(facts.service === 'sqs' ? { 'x-amzn-query-error': 'AccessDenied;Sender' } : {}),
      },
      Buffer.from(JSON.stringify({ __type: type, message, Message: message })),
    );
  }
}

/** A RunTask's client token, and the request it came with (for ECS's conflict check). */
/** How many tasks a RunTask asks for. */
function taskCount(body: Buffer): number {
  try {
    const count = (JSON.parse(body.toString('utf8')) as { count?: unknown }).count;
    return typeof count === 'number' && count > 0 ? count : 1;
  } catch {
    return 1;
  }
}

function runTaskToken(body: Buffer): { value: string; request: string } | undefined {
  try {
    const input = JSON.parse(body.toString('utf8')) as { clientToken?: unknown };
    return typeof input.clientToken === 'string'
      ? { value: input.clientToken, request: body.toString('utf8') }
      : undefined;
  } catch {
    return undefined;
  }
}

/** The ARN whose resource policy governs an authorization: the bucket of an object. */
function resourceOwning(arn: string): string {
  const object = /^(arn:aws:s3:::[^/]+)\//.exec(arn);
  return object?.[1] ?? arn;
}

/** A realised task in ECS's JSON wire shape (timestamps as epoch seconds). */
function wireTask(task: Task): Record<string, unknown> {
  return JSON.parse(
    JSON.stringify(task, (_key, value: unknown) => value),
    (_key, value: unknown) =>
      typeof value === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/.test(value)
        ? Date.parse(value) / 1000
        : value,
  ) as Record<string, unknown>;
}

/** Tokens refilled continuously up to a maximum; a request takes what it needs or nothing. */
class TokenBucket {
  private tokens: number;
  private at = Date.now();

  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
  ) {
    this.tokens = burst;
  }

  take(count: number): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.perSecond);
    this.at = now;
    if (this.tokens < count) return false;
    this.tokens -= count;
    return true;
  }
}

async function readBody(request: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function lowerCaseHeaders(headers: http.IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name.toLowerCase()] = Array.isArray(value) ? value.join(',') : value;
  }
  return out;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'host', 'content-length']);

async function forward(
  base: string,
  request: { method: string; url: string; headers: Record<string, string>; body: Buffer },
): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
  const target = new URL(base);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers))
    if (!HOP_BY_HOP.has(name)) headers[name] = value;
  headers.host = target.host;
  headers['content-length'] = String(request.body.length);
  return new Promise((resolve, reject) => {
    const outgoing = http.request(
      { host: target.hostname, port: target.port, method: request.method, path: request.url, headers },
      (incoming) => {
        const chunks: Buffer[] = [];
        incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
        incoming.on('error', reject);
        incoming.on('end', () => {
          const out = lowerCaseHeaders(incoming.headers);
          for (const name of HOP_BY_HOP) delete out[name];
          const body = Buffer.concat(chunks);
          // HEAD answers carry the object's length without a body: keep it.
          out['content-length'] =
            request.method === 'HEAD' ? (incoming.headers['content-length'] ?? '0') : String(body.length);
          resolve({ status: incoming.statusCode ?? 502, headers: out, body });
        });
      },
    );
    outgoing.on('error', reject);
    outgoing.end(request.body);
  });
}

function reply(
  response: http.ServerResponse,
  status: number,
  headers: Record<string, string>,
  body: Buffer,
): void {
  response.writeHead(status, headers);
  response.end(body);
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
