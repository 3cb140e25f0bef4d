// The HTTP API handler (API Gateway HTTP API v2 events). It decodes requests, calls one
// use case each and encodes the answer; errors become problem+json in one place.
import { createHash } from 'node:crypto';
import middy, { type MiddlewareObj } from '@middy/core';
import httpRouterHandler, { type Route } from '@middy/http-router';
import type { APIGatewayProxyEventV2WithIAMAuthorizer, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { z } from 'zod';
import type { Core } from '#shared/core.ts';
import { LABEL_KEY, toFieldProblems } from '#shared/domain/job-spec.ts';
import { parseReviewBody, type ReviewBody } from '#shared/domain/review.ts';
import { EXECUTION_STATES, type ExecutionState, isExecutionState } from '#shared/domain/states.ts';
import { UPLOAD_SECRET_HEADER } from '#shared/domain/upload-links.ts';
import {
  IdempotencyConflict,
  InvalidTransition,
  MethodNotAllowed,
  NotFound,
  PayloadTooLarge,
  Unauthorized,
  UnsupportedMediaType,
  ValidationError,
} from '#shared/errors.ts';
import {
  ID_PATTERN,
  LOG_INLINE_MAX_BYTES,
  MAX_BODY_BYTES,
  openApiDocument,
  QUERY_LIMITS,
} from '#shared/http/openapi.ts';
import { errorResponse, jsonResponse, problemOf } from '#shared/http/problem.ts';
import {
  serviceInfo,
  TES_PAGE_SIZE,
  TES_PREFIX,
  TES_STATES,
  TES_VIEWS,
  type TesState,
  type TesView,
} from '#shared/http/tes.ts';
import { acceptBid, askForBid, type KeyedRequest, rejectBid, submitJob } from '#shared/use-cases/bids.ts';
import {
  cancelExecution,
  countExecutions,
  deleteExecution,
  getExecution,
  listExecutions,
  waitForExecution,
} from '#shared/use-cases/executions.ts';
import { describeNode } from '#shared/use-cases/node.ts';
import { queuePlace } from '#shared/use-cases/queue-place.ts';
import {
  getResult,
  readLog,
  readStoredLog,
  reviewResult,
  type StreamName,
} from '#shared/use-cases/results.ts';
import { cancelTask, createTask, getTask, listTasks } from '#shared/use-cases/tes-tasks.ts';
import { signUploadLinks } from '#shared/use-cases/uploads.ts';

export type ApiEvent = APIGatewayProxyEventV2WithIAMAuthorizer;
export type ApiResult = APIGatewayProxyStructuredResultV2;

export { MAX_BODY_BYTES };

const IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000;
/**
 * A claim in progress is held no longer than the request can run (on Lambda, its remaining
 * time; locally at most this), so a claim left by a crash frees itself instead of answering
 * 409 for a day. The local store also drops such claims at start.
 */
const IDEMPOTENCY_LEASE_MS = 60 * 1000;

/** The caller API Gateway authenticated; its routes take AWS Signature Version 4 (IAM). */
function ownerOf(event: ApiEvent): string {
  const owner = event.requestContext.authorizer?.iam?.userArn;
  if (!owner) {
    throw new Unauthorized('the request carries no caller identity; sign it with AWS Signature Version 4', {
      challenge: 'AWS4-HMAC-SHA256',
    });
  }
  return owner;
}

function idOf(event: ApiEvent): string {
  const id = event.pathParameters?.id ?? '';
  if (!ID_PATTERN.test(id)) {
    throw new ValidationError(
      `not an execution id: ${JSON.stringify(id)} (ids look like ex_ followed by 26 characters)`,
      [{ field: 'id', message: 'malformed execution id' }],
    );
  }
  return id;
}

/** The request an Idempotency-Key names, or undefined without one. */
function keyedRequest(event: ApiEvent): KeyedRequest | undefined {
  const key = event.headers['idempotency-key'];
  if (event.requestContext.http.method !== 'POST' || key === undefined) return undefined;
  if (key.length === 0 || key.length > 255) {
    throw new ValidationError('Idempotency-Key must be 1 to 255 characters');
  }
  return {
    key: createHash('sha256')
      .update(`${ownerOf(event)}\n${key}`)
      .digest('hex'),
    fingerprint: createHash('sha256')
      .update(`${event.requestContext.http.method} ${event.requestContext.http.path}\n${bodyText(event)}`)
      .digest('hex'),
  };
}

function bodyText(event: ApiEvent): string {
  if (event.body === undefined || event.body === '') return '';
  return event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body;
}

/** JSON media types: `application/json` and the `+json` suffix types (RFC 6839). */
const JSON_MEDIA_TYPE = /^application\/(?:[\w.-]+\+)?json[ \t]*(?:;|$)/i;
const CHARSET = /;[ \t]*charset[ \t]*=[ \t]*"?([^";\s]+)/i;

/**
 * The body as JSON. It must say it is JSON: a body without a content type is what an HTML
 * form or a `no-cors` fetch on another site sends, and must not be taken for a request.
 */
function jsonBody(event: ApiEvent): unknown {
  const text = bodyText(event);
  if (text.trim() === '') throw new ValidationError('the body is empty; send the job spec as JSON');
  const type = event.headers['content-type'];
  if (type === undefined || !JSON_MEDIA_TYPE.test(type)) {
    throw new UnsupportedMediaType(
      `the body must be JSON sent with content-type application/json; ${type === undefined ? 'the request has no content-type' : `got ${type}`}`,
    );
  }
  const charset = CHARSET.exec(type)?.[1]?.toLowerCase();
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    throw new UnsupportedMediaType(`JSON is read as UTF-8; got charset ${charset}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ValidationError(`the body is not valid JSON: ${(error as Error).message}`);
  }
}

/** Query parameters, with repeated ones (`state=A&state=B`) kept apart. */
function queryValues(event: ApiEvent, name: string): string[] {
  const raw = new URLSearchParams(event.rawQueryString ?? '');
  const values = raw.getAll(name);
  if (values.length > 0) return values.flatMap((v) => v.split(','));
  return event.queryStringParameters?.[name]?.split(',') ?? [];
}

/** A whole-number query parameter within the limits the OpenAPI document publishes. */
function queryNumber(
  event: ApiEvent,
  name: string,
  { min, max, default: fallback = min }: { min: number; max: number; default?: number },
): number {
  const [text] = queryValues(event, name);
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ValidationError(
      `${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`,
      [{ field: name, message: `must be a whole number from ${min} to ${max}` }],
    );
  }
  return value;
}

function queryStates(event: ApiEvent): ExecutionState[] {
  const states = queryValues(event, 'state').filter((s) => s !== '');
  const unknown = states.filter((s) => !isExecutionState(s));
  if (unknown.length > 0) {
    throw new ValidationError(
      `unknown state ${unknown.join(', ')}; states are ${EXECUTION_STATES.join(', ')}`,
      [{ field: 'state', message: `unknown: ${unknown.join(', ')}` }],
    );
  }
  return states as ExecutionState[];
}

/** `label=KEY=VALUE`, repeated: every one must match. Values may hold commas and `=`. */
function queryLabels(event: ApiEvent): Record<string, string> {
  const raw = new URLSearchParams(event.rawQueryString ?? '').getAll('label');
  const labels: Record<string, string> = {};
  for (const item of raw) {
    const at = item.indexOf('=');
    const key = at < 0 ? item : item.slice(0, at);
    if (at <= 0 || !LABEL_KEY.test(key)) {
      throw new ValidationError(`label filter must be KEY=VALUE with a label key, got ${item}`, [
        { field: 'label', message: `not KEY=VALUE: ${item}` },
      ]);
    }
    labels[key] = item.slice(at + 1);
  }
  return labels;
}

function queryBoolean(event: ApiEvent, name: string): boolean {
  const [text] = queryValues(event, name);
  if (text === undefined || text === '' || text === 'false' || text === '0') return false;
  if (text === 'true' || text === '1') return true;
  throw new ValidationError(`${name} must be true or false, got ${JSON.stringify(text)}`);
}

function streamOf(event: ApiEvent): StreamName {
  const [stream = 'stdout'] = queryValues(event, 'stream');
  if (stream !== 'stdout' && stream !== 'stderr') {
    throw new ValidationError(`stream must be stdout or stderr, got ${JSON.stringify(stream)}`);
  }
  return stream;
}

/** The optional review body: none, `{}` or `{"justification": "…"}`. */
function reviewBody(event: ApiEvent): ReviewBody {
  return bodyText(event).trim() === '' ? {} : parseReviewBody(jsonBody(event));
}

/** No body, or an empty JSON object, which clients commonly send to an action without input. */
function noFields(event: ApiEvent): void {
  if (bodyText(event).trim() === '') return;
  const parsed = z.strictObject({}).safeParse(jsonBody(event));
  if (!parsed.success) {
    const problems = toFieldProblems(parsed.error);
    throw new ValidationError(
      `this request takes no fields: ${problems.map((p) => `${p.field}: ${p.message}`).join('; ')}`,
      problems,
    );
  }
}

const binary = (data: Buffer, headers: Record<string, string>): ApiResult => ({
  statusCode: 200,
  isBase64Encoded: true,
  headers: { 'content-type': 'application/octet-stream', ...headers },
  body: data.toString('base64'),
});

const route = (
  method: Route<ApiEvent, ApiResult>['method'],
  path: string,
  handler: (event: ApiEvent) => Promise<ApiResult>,
): Route<ApiEvent, ApiResult> => ({ method, path, handler });

export function routes(core: Core): Route<ApiEvent, ApiResult>[] {
  return [
    route('POST', '/v1/bids', async (event) => {
      const execution = await askForBid(core, ownerOf(event), jsonBody(event), keyedRequest(event));
      return jsonResponse(201, { executionId: execution.id, bid: execution.bid, execution });
    }),
    route('POST', '/v1/bids/{id}/accept', async (event) => {
      noFields(event);
      return jsonResponse(202, await acceptBid(core, ownerOf(event), idOf(event)));
    }),
    route('POST', '/v1/bids/{id}/reject', async (event) =>
      jsonResponse(200, await rejectBid(core, ownerOf(event), idOf(event), reviewBody(event))),
    ),
    route('POST', '/v1/jobs', async (event) =>
      jsonResponse(202, await submitJob(core, ownerOf(event), jsonBody(event), keyedRequest(event))),
    ),
    route('GET', '/v1/executions', async (event) => {
      const [cursor] = queryValues(event, 'cursor');
      const labels = queryLabels(event);
      const [image] = new URLSearchParams(event.rawQueryString ?? '').getAll('image');
      const page = await listExecutions(core, ownerOf(event), {
        states: queryStates(event),
        ...(Object.keys(labels).length > 0 ? { labels } : {}),
        ...(image ? { image } : {}),
        limit: queryNumber(event, 'limit', QUERY_LIMITS.listLimit),
        ...(cursor ? { cursor } : {}),
      });
      return jsonResponse(200, page);
    }),
    route('GET', '/v1/executions/counts', async (event) =>
      jsonResponse(200, await countExecutions(core, ownerOf(event))),
    ),
    route('GET', '/v1/executions/{id}', async (event) =>
      jsonResponse(200, await getExecution(core, ownerOf(event), idOf(event))),
    ),
    route('DELETE', '/v1/executions/{id}', async (event) => {
      await deleteExecution(core, ownerOf(event), idOf(event));
      return { statusCode: 204, headers: {}, body: '' };
    }),
    route('GET', '/v1/executions/{id}/wait', async (event) => {
      const timeoutSeconds = queryNumber(event, 'timeoutSeconds', QUERY_LIMITS.waitTimeoutSeconds);
      const states = queryStates(event);
      const { execution, done } = await waitForExecution(
        core,
        ownerOf(event),
        idOf(event),
        timeoutSeconds,
        states.length > 0 ? states : undefined,
      );
      return jsonResponse(200, execution, { 'ferry-wait-done': String(done) });
    }),
    route('GET', '/v1/executions/{id}/queue', async (event) =>
      jsonResponse(200, await queuePlace(core, ownerOf(event), idOf(event))),
    ),
    route('POST', '/v1/executions/{id}/cancel', async (event) => {
      noFields(event);
      return jsonResponse(202, await cancelExecution(core, ownerOf(event), idOf(event)));
    }),
    route('GET', '/v1/executions/{id}/logs', async (event) => {
      const owner = ownerOf(event);
      const id = idOf(event);
      const stream = streamOf(event);
      const follow = queryBoolean(event, 'follow');
      const [offsetText] = queryValues(event, 'offset');
      if (!follow && offsetText === undefined) {
        const stored = await readStoredLog(core, owner, id, stream, LOG_INLINE_MAX_BYTES);
        if (stored.kind === 'link') {
          return {
            statusCode: 303,
            headers: { location: stored.url, 'ferry-stored-bytes': String(stored.storedBytes) },
            body: '',
          };
        }
        return binary(stored.data, {});
      }
      const chunk = await readLog(core, owner, id, stream, {
        offset: queryNumber(event, 'offset', QUERY_LIMITS.logOffset),
        maxBytes: queryNumber(event, 'maxBytes', QUERY_LIMITS.logMaxBytes),
        waitSeconds: follow ? queryNumber(event, 'waitSeconds', QUERY_LIMITS.logWaitSeconds) : 0,
      });
      return binary(chunk.data, {
        'ferry-next-offset': String(chunk.nextOffset),
        'ferry-skipped-bytes': String(chunk.skippedBytes),
        'ferry-complete': String(chunk.complete),
        'ferry-state': chunk.state,
      });
    }),
    route('GET', '/v1/executions/{id}/result', async (event) =>
      jsonResponse(200, await getResult(core, ownerOf(event), idOf(event))),
    ),
    route('POST', '/v1/executions/{id}/result/accept', async (event) =>
      jsonResponse(200, await reviewResult(core, ownerOf(event), idOf(event), 'ACCEPTED', reviewBody(event))),
    ),
    route('POST', '/v1/executions/{id}/result/reject', async (event) =>
      jsonResponse(200, await reviewResult(core, ownerOf(event), idOf(event), 'REJECTED', reviewBody(event))),
    ),
    // Called by a task's publisher, not by the execution's owner: the upload secret, not the
    // caller, decides (on AWS every task signs as the same task role).
    route('POST', '/v1/executions/{id}/uploads', async (event) =>
      jsonResponse(
        200,
        await signUploadLinks(core, idOf(event), event.headers[UPLOAD_SECRET_HEADER], () => jsonBody(event)),
      ),
    ),
    route('GET', '/v1/openapi.json', async () => jsonResponse(200, openApiDocument())),
    // The GA4GH Task Execution Service (TES 1.1): the same executions, in TES's words.
    route('GET', `${TES_PREFIX}/service-info`, async (event) => {
      ownerOf(event);
      const node = await describeNode(core);
      return jsonResponse(
        200,
        serviceInfo({
          version: node.version,
          backend: node.backend,
          // API Gateway answers on https only; the local server on plain http.
          url: `${event.requestContext.apiId === 'local' ? 'http' : 'https'}://${event.requestContext.domainName}/`,
          storage: core.settings.policy.inputAllow,
        }),
      );
    }),
    route('POST', `${TES_PREFIX}/tasks`, async (event) =>
      jsonResponse(200, await createTask(core, ownerOf(event), jsonBody(event), keyedRequest(event))),
    ),
    route('GET', `${TES_PREFIX}/tasks`, async (event) => {
      const owner = ownerOf(event);
      const params = new URLSearchParams(event.rawQueryString ?? '');
      const [state] = params.getAll('state');
      if (state !== undefined && !(TES_STATES as readonly string[]).includes(state)) {
        throw new ValidationError(
          `state must be one of ${TES_STATES.join(', ')}, not ${JSON.stringify(state)}`,
          [{ field: 'state', message: 'not a TES state' }],
        );
      }
      const keys = params.getAll('tag_key');
      const values = params.getAll('tag_value');
      if (values.length > keys.length) {
        throw new ValidationError('each tag_value needs a tag_key before it', [
          { field: 'tag_value', message: `${values.length} values for ${keys.length} keys` },
        ]);
      }
      const [namePrefix] = params.getAll('name_prefix');
      const [pageToken] = params.getAll('page_token');
      return jsonResponse(
        200,
        await listTasks(core, owner, {
          view: tesView(event),
          pageSize: queryNumber(event, 'page_size', TES_PAGE_SIZE),
          ...(pageToken === undefined ? {} : { pageToken }),
          ...(namePrefix === undefined ? {} : { namePrefix }),
          ...(state === undefined ? {} : { state: state as TesState }),
          tags: keys.map((key, i) => [key, values[i] ?? ''] as const),
        }),
      );
    }),
    route('GET', `${TES_PREFIX}/tasks/{id}`, async (event) =>
      jsonResponse(200, await getTask(core, ownerOf(event), idOf(event), tesView(event))),
    ),
    route('POST', `${TES_PREFIX}/tasks/{id}:cancel`, async (event) =>
      jsonResponse(200, await cancelTask(core, ownerOf(event), idOf(event))),
    ),
    route('GET', '/v1/node', async (event) => {
      ownerOf(event);
      return jsonResponse(200, await describeNode(core));
    }),
  ];
}

/** TES's view parameter: MINIMAL unless asked. */
function tesView(event: ApiEvent): TesView {
  const [view = 'MINIMAL'] = new URLSearchParams(event.rawQueryString ?? '').getAll('view');
  if (!(TES_VIEWS as readonly string[]).includes(view)) {
    throw new ValidationError(`view must be one of ${TES_VIEWS.join(', ')}, not ${JSON.stringify(view)}`, [
      { field: 'view', message: 'not a TES view' },
    ]);
  }
  return view as TesView;
}

/** 405 when the path exists for another method, 404 otherwise. */
function notFoundFor(table: Route<ApiEvent, ApiResult>[]) {
  const patterns = table.map((route) => ({
    method: route.method,
    pattern: new RegExp(`^${route.path.replace(/\{[^/]+\}/g, '[^/]+')}/?$`),
  }));
  return ({ method, path }: { method: string; path: string }): never => {
    const allowed = patterns.filter((p) => p.pattern.test(path)).map((p) => p.method);
    if (allowed.length > 0) {
      const methods = [...new Set(allowed)];
      throw new MethodNotAllowed(`${method} is not allowed on ${path}; use ${methods.join(' or ')}`, {
        details: { allow: methods },
      });
    }
    throw new NotFound(`no such endpoint: ${method} ${path}`);
  };
}

/** Refuses oversized bodies before anything parses them. */
const bodyLimit = (maxBytes: number): MiddlewareObj<ApiEvent, ApiResult> => ({
  before: (request) => {
    const body = request.event.body;
    if (body === undefined) return;
    const bytes = request.event.isBase64Encoded ? Math.floor((body.length * 3) / 4) : Buffer.byteLength(body);
    if (bytes > maxBytes) {
      throw new PayloadTooLarge(`the body is ${bytes} bytes; at most ${maxBytes} bytes are accepted`);
    }
  },
});

/**
 * Idempotency-Key on POST: the first request with a key runs; a retry with the same key
 * and the same request gets the first answer again; the same key with another request is refused.
 */
const idempotency = (core: Core): MiddlewareObj<ApiEvent, ApiResult> => {
  const internal = (request: { internal: unknown }) => request.internal as Record<string, unknown>;
  const keyOf = (request: { internal: unknown }) => internal(request).idempotencyKey as string | undefined;
  return {
    before: async (request) => {
      const keyed = keyedRequest(request.event);
      if (keyed === undefined) return;
      const { key: storeKey, fingerprint } = keyed;
      const leaseMs = Math.min(request.context.getRemainingTimeInMillis(), IDEMPOTENCY_LEASE_MS);
      const existing = await core.idempotency.claim(storeKey, {
        fingerprint,
        state: 'IN_PROGRESS',
        expiresAt: new Date(Date.now() + leaseMs).toISOString(),
      });
      if (existing === undefined) {
        internal(request).idempotencyKey = storeKey;
        internal(request).idempotencyFingerprint = fingerprint;
        return;
      }
      if (existing.fingerprint !== fingerprint) {
        throw new IdempotencyConflict(
          'this Idempotency-Key was used with a different request; use a new key',
        );
      }
      if (existing.state === 'IN_PROGRESS' || existing.response === undefined) {
        throw new InvalidTransition(
          'a request with this Idempotency-Key is still in progress; retry shortly',
        );
      }
      return {
        statusCode: existing.response.statusCode,
        headers: { ...existing.response.headers, 'idempotent-replayed': 'true' },
        body: existing.response.body,
      };
    },
    after: async (request) => {
      const key = keyOf(request);
      const response = request.response;
      if (key === undefined || response === undefined || response === null) return;
      await core.idempotency.complete(key, {
        fingerprint: internal(request).idempotencyFingerprint as string,
        state: 'COMPLETED',
        response: {
          statusCode: response.statusCode ?? 200,
          body: response.body ?? '',
          headers: Object.fromEntries(Object.entries(response.headers ?? {}).map(([k, v]) => [k, String(v)])),
        },
        expiresAt: new Date(Date.now() + IDEMPOTENCY_TTL_MS).toISOString(),
      });
    },
    onError: async (request) => {
      const key = keyOf(request);
      // A failed request may be retried with the same key and run again. If even the release
      // fails (the store is down), the claim's short lease frees the key.
      if (key === undefined) return;
      await core.idempotency.release(key).catch((error) => {
        core.log.warn('could not release an Idempotency-Key; it frees itself when its lease ends', { error });
      });
    },
  };
};

const problems = (core: Core): MiddlewareObj<ApiEvent, ApiResult> => ({
  onError: (request) => {
    const problem = problemOf(request.error);
    if (problem.status >= 500) {
      core.log.error('request failed', {
        error: request.error,
        method: request.event.requestContext.http.method,
        path: request.event.requestContext.http.path,
      });
    }
    request.response = errorResponse(request.error);
  },
});

export function createApiHandler(core: Core, options: { maxBodyBytes?: number } = {}) {
  const table = routes(core);
  return middy<ApiEvent, ApiResult>()
    .use(problems(core))
    .use(bodyLimit(options.maxBodyBytes ?? MAX_BODY_BYTES))
    .use(idempotency(core))
    .handler(httpRouterHandler({ routes: table, notFoundResponse: notFoundFor(table) }) as never);
}
