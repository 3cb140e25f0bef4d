// The OpenAPI document of Ferry's HTTP API, generated from the same zod schemas that
// validate requests and type the answers, so the published contract cannot drift from what
// the server accepts and returns. Every status a route can answer is listed with its body.
import { z } from 'zod';
import { JobSpecSchema } from '../domain/job-spec.ts';
import { ReviewBodySchema } from '../domain/review.ts';
import { EXECUTION_STATES } from '../domain/states.ts';
import {
  UPLOAD_GRACE_AFTER_END_SECONDS,
  UPLOAD_SECRET_HEADER,
  UPLOAD_SECRET_LENGTH,
  UploadLinksBodySchema,
} from '../domain/upload-links.ts';
import { FERRY_VERSION } from '../version.ts';
import {
  BidReplySchema,
  ExecutionPageSchema,
  ExecutionSchema,
  NodeSchema,
  ProblemSchema,
  QueuePlaceSchema,
  ResultViewSchema,
  StateCountsSchema,
  UploadLinksSchema,
} from './responses.ts';
import {
  TES_PAGE_SIZE,
  TES_PREFIX,
  TES_STATES,
  TES_VIEWS,
  TesCancelTaskSchema,
  TesCreateTaskSchema,
  TesListTasksSchema,
  TesServiceInfoSchema,
  TesTaskSchema,
  TesTaskViewSchema,
} from './tes.ts';

/** The largest request body the server reads (the api handler refuses more with 413). */
export const MAX_BODY_BYTES = 1024 * 1024;
/**
 * The most output a plain logs read carries itself; a larger stored stream is answered with a
 * redirect to its download link (a Lambda response holds at most 6 MB, in base64).
 */
export const LOG_INLINE_MAX_BYTES = 1024 * 1024;
export const ID_PATTERN = /^ex_[0-9a-z]{26}$/;
/** Limits of query parameters, enforced by the api handler and published here. */
export const QUERY_LIMITS = Object.freeze({
  listLimit: { min: 1, max: 500, default: 50 },
  waitTimeoutSeconds: { min: 0, max: 3600, default: 20 },
  logMaxBytes: { min: 1, max: 4 * 1024 * 1024, default: 1024 * 1024 },
  logWaitSeconds: { min: 0, max: 3600, default: 20 },
  logOffset: { min: 0, max: Number.MAX_SAFE_INTEGER },
  idempotencyKeyLength: { min: 1, max: 255 },
});

type Operation = {
  operationId: string;
  summary: string;
  tags?: string[];
  parameters?: object[];
  requestBody?: object;
  responses: Record<string, object>;
  security?: object[];
};

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: object) => ({ 'application/json': { schema } });
const header = (description: string, schema: object, required = false) => ({
  description,
  required,
  schema,
});

const PROBLEMS: Record<string, { description: string; headers?: Record<string, object> }> = {
  '400': { description: 'the request is malformed: a path, parameter, header or body that is wrong' },
  '401': {
    description: 'no valid bearer token (when the server requires one)',
    headers: {
      'WWW-Authenticate': header(
        'the scheme to authenticate with (Bearer on a local server, AWS4-HMAC-SHA256 on AWS)',
        { type: 'string' },
      ),
    },
  },
  '404': { description: 'no such execution for this caller (another caller’s does not exist for you)' },
  '405': {
    description: 'the path takes other methods',
    headers: { Allow: header('the methods the path takes', { type: 'string' }, true) },
  },
  '409': {
    description:
      'the execution is in a state where this makes no sense, or a request with the same Idempotency-Key is still in progress',
  },
  '403': {
    description:
      'refused by the local server: an Origin or Host it does not serve, or a cross-site browser request',
  },
  '413': { description: `the body is over ${MAX_BODY_BYTES} bytes` },
  '414': { description: 'the request target is longer than the server reads' },
  '415': { description: 'the body is not JSON (send content-type application/json)' },
  '422': {
    description:
      'Ferry declined the job (the problem carries `executionId` and the `bid` with its reason), or the Idempotency-Key was used with another request',
  },
  '431': { description: 'the request line and headers are longer than the server reads' },
  '5XX': { description: 'Ferry could not complete the request; details are in the server log' },
};

const problems = (...statuses: (keyof typeof PROBLEMS)[]) =>
  Object.fromEntries(statuses.map((status) => [status, { $ref: `#/components/responses/Problem${status}` }]));

/** Every route can answer these. */
const ALWAYS = ['401', '403', '414', '431', '5XX'] as const;
/** Every POST can answer these: the body limit and the Idempotency-Key checks. */
const POSTS = ['400', '409', '413', '422'] as const;

const replayed = {
  'idempotent-replayed': header(
    '"true" when this is the stored answer to an earlier request with the same Idempotency-Key',
    {
      type: 'string',
      enum: ['true'],
    },
  ),
};

const ok = (
  status: number,
  description: string,
  schema: string,
  headers: Record<string, object> = {},
  links: Record<string, object> = {},
) => ({
  [String(status)]: { description, headers, content: json(ref(schema)), links },
});

/** Links from an answer to the operations on the execution it names. */
const linksTo = (idExpression: string, ...operationIds: string[]) =>
  Object.fromEntries(
    operationIds.map((operationId) => [operationId, { operationId, parameters: { id: idExpression } }]),
  );
const ON_EXECUTION = [
  'getExecution',
  'waitForExecution',
  'cancelExecution',
  'getLogs',
  'getResult',
  'acceptResult',
  'rejectResult',
];

const id = {
  name: 'id',
  in: 'path',
  required: true,
  description: 'an execution id',
  schema: { type: 'string', pattern: ID_PATTERN.source, minLength: 29, maxLength: 29 },
};
const idempotencyKey = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  description:
    'makes a retry safe: the same key with the same request returns the first answer; with another request, 422',
  schema: {
    type: 'string',
    minLength: QUERY_LIMITS.idempotencyKeyLength.min,
    maxLength: QUERY_LIMITS.idempotencyKeyLength.max,
  },
};
const range = (limits: { min: number; max: number; default?: number }) => ({
  type: 'integer',
  minimum: limits.min,
  maximum: limits.max,
  ...(limits.default === undefined ? {} : { default: limits.default }),
});
const statesParameter = {
  name: 'state',
  in: 'query',
  description: 'any of these states (repeat the parameter, or separate with commas)',
  schema: { type: 'array', items: { type: 'string', enum: [...EXECUTION_STATES] } },
  style: 'form',
  explode: true,
};
const jobBody = {
  required: true,
  description: `the job spec, at most ${MAX_BODY_BYTES} bytes`,
  content: json(ref('JobSpec')),
  'x-max-bytes': MAX_BODY_BYTES,
};
const reviewBody = {
  required: false,
  description: 'optional; no body and `{}` are fine',
  content: json(ref('ReviewBody')),
  'x-max-bytes': MAX_BODY_BYTES,
};

const noFieldsBody = {
  required: false,
  description: 'optional; no body, or `{}`',
  content: json({ type: 'object', additionalProperties: false, properties: {} }),
  'x-max-bytes': MAX_BODY_BYTES,
};

/** A problem answer described for one operation rather than shared. */
const problemAnswer = (description: string, headers?: Record<string, object>) => ({
  description,
  ...(headers === undefined ? {} : { headers }),
  content: { 'application/problem+json': { schema: ref('Problem') } },
});

const uploadSecret = {
  name: UPLOAD_SECRET_HEADER,
  in: 'header',
  required: true,
  description:
    "the upload secret of one of the execution's launch attempts, which only that task's publisher is given",
  schema: { type: 'string', minLength: UPLOAD_SECRET_LENGTH, maxLength: UPLOAD_SECRET_LENGTH },
};

/** A query parameter. */
const query = (name: string, description: string, schema: object) => ({
  name,
  in: 'query',
  required: false,
  description,
  schema,
});
const tesView = query(
  'view',
  'MINIMAL (id and state), BASIC (all but output, content and system logs) or FULL',
  {
    type: 'string',
    enum: [...TES_VIEWS],
    default: 'MINIMAL',
  },
);

const PATHS: Record<string, Record<string, Operation>> = {
  '/v1/bids': {
    post: {
      operationId: 'askForBid',
      summary: 'Ask for a bid on a job: accepted with its size and estimate, or declined with the reason',
      parameters: [idempotencyKey],
      requestBody: jobBody,
      responses: {
        ...ok(
          201,
          'the bid (accepted or declined) and its execution',
          'BidReply',
          replayed,
          linksTo('$response.body#/executionId', 'acceptBid', 'rejectBid', ...ON_EXECUTION),
        ),
        ...problems(...POSTS, '415', ...ALWAYS),
      },
    },
  },
  '/v1/bids/{id}/accept': {
    post: {
      operationId: 'acceptBid',
      summary: 'Accept a bid: the job is queued',
      parameters: [id, idempotencyKey],
      requestBody: noFieldsBody,
      responses: {
        ...ok(
          202,
          'the execution, QUEUED (or as far as it got, if accepted before)',
          'Execution',
          replayed,
          linksTo('$response.body#/id', ...ON_EXECUTION),
        ),
        ...problems(...POSTS, '404', '415', ...ALWAYS),
      },
    },
  },
  '/v1/bids/{id}/reject': {
    post: {
      operationId: 'rejectBid',
      summary: 'Reject a bid, optionally saying why',
      parameters: [id, idempotencyKey],
      requestBody: reviewBody,
      responses: {
        ...ok(200, 'the execution, BID_REJECTED', 'Execution', replayed),
        ...problems(...POSTS, '404', '415', ...ALWAYS),
      },
    },
  },
  '/v1/jobs': {
    post: {
      operationId: 'submitJob',
      summary: 'Ask for a bid and accept it in one call; a declined job is a 422 with the bid',
      parameters: [idempotencyKey],
      requestBody: jobBody,
      responses: {
        ...ok(
          202,
          'the queued execution',
          'Execution',
          replayed,
          linksTo('$response.body#/id', ...ON_EXECUTION),
        ),
        ...problems(...POSTS, '415', ...ALWAYS),
      },
    },
  },
  '/v1/executions': {
    get: {
      operationId: 'listExecutions',
      summary: "The caller's executions in any of the given states, newest first",
      parameters: [
        statesParameter,
        {
          name: 'label',
          in: 'query',
          description:
            'KEY=VALUE: only executions with this label; repeat for several, all must match. A filtered page may hold fewer than `limit` items and still have a nextCursor.',
          schema: { type: 'array', items: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._/-]*=' } },
          style: 'form',
          explode: true,
        },
        {
          name: 'image',
          in: 'query',
          description: 'only executions of this image, as their spec names it',
          schema: { type: 'string' },
        },
        { name: 'limit', in: 'query', schema: range(QUERY_LIMITS.listLimit) },
        {
          name: 'cursor',
          in: 'query',
          description: 'nextCursor of the page before',
          schema: { type: 'string' },
        },
      ],
      responses: { ...ok(200, 'a page of executions', 'ExecutionPage'), ...problems('400', ...ALWAYS) },
    },
  },
  '/v1/executions/counts': {
    get: {
      operationId: 'countExecutions',
      summary: "How many of the caller's executions are in each state",
      responses: { ...ok(200, 'the counts', 'StateCounts'), ...problems(...ALWAYS) },
    },
  },
  '/v1/executions/{id}': {
    get: {
      operationId: 'getExecution',
      summary: 'An execution, with its history',
      parameters: [id],
      responses: { ...ok(200, 'the execution', 'Execution'), ...problems('400', '404', ...ALWAYS) },
    },
    delete: {
      operationId: 'deleteExecution',
      summary: 'Delete an ended execution and its stored output (what was published stays)',
      parameters: [id],
      responses: {
        '204': { description: 'deleted' },
        ...problems('400', '404', '409', ...ALWAYS),
      },
    },
  },
  '/v1/executions/{id}/wait': {
    get: {
      operationId: 'waitForExecution',
      summary: 'Hold until the execution ends (or reaches a given state) or the timeout',
      parameters: [
        id,
        { name: 'timeoutSeconds', in: 'query', schema: range(QUERY_LIMITS.waitTimeoutSeconds) },
        statesParameter,
      ],
      responses: {
        ...ok(200, 'the execution as it is then', 'Execution', {
          'ferry-wait-done': header(
            '"true" when the execution reached what was waited for, "false" at the timeout',
            { type: 'string', enum: ['true', 'false'] },
            true,
          ),
        }),
        ...problems('400', '404', ...ALWAYS),
      },
    },
  },
  '/v1/executions/{id}/queue': {
    get: {
      operationId: 'getQueuePlace',
      summary: 'Where a queued execution stands: its place in line and what it waits for',
      parameters: [id],
      responses: {
        ...ok(200, 'its place and the reason it waits', 'QueuePlace'),
        ...problems('400', '404', '409', ...ALWAYS),
      },
    },
  },
  '/v1/executions/{id}/cancel': {
    post: {
      operationId: 'cancelExecution',
      summary: 'Cancel a queued, launching or running execution',
      parameters: [id, idempotencyKey],
      requestBody: noFieldsBody,
      responses: {
        ...ok(202, 'the execution, CANCELLED or stopping', 'Execution', replayed),
        ...problems(...POSTS, '404', '415', ...ALWAYS),
      },
    },
  },
  '/v1/executions/{id}/logs': {
    get: {
      operationId: 'getLogs',
      summary:
        'Stored output (a redirect to its download link when large); with follow or offset, the next bytes by stream position (live while running)',
      parameters: [
        id,
        {
          name: 'stream',
          in: 'query',
          schema: { type: 'string', enum: ['stdout', 'stderr'], default: 'stdout' },
        },
        {
          name: 'follow',
          in: 'query',
          description: 'hold until there is something new',
          schema: { type: 'boolean' },
        },
        {
          name: 'offset',
          in: 'query',
          description: 'stream position to read from',
          schema: range(QUERY_LIMITS.logOffset),
        },
        {
          name: 'maxBytes',
          in: 'query',
          description: 'the most bytes to return',
          schema: range(QUERY_LIMITS.logMaxBytes),
        },
        {
          name: 'waitSeconds',
          in: 'query',
          description: 'with follow: the longest to hold',
          schema: range(QUERY_LIMITS.logWaitSeconds),
        },
      ],
      responses: {
        '200': {
          description: `the bytes, exactly as stored (while the run goes on, at most ${LOG_INLINE_MAX_BYTES} live bytes); with follow or offset, the headers say where to go on`,
          headers: {
            'ferry-next-offset': header('stream position to ask for next', {
              type: 'string',
              pattern: '^[0-9]+$',
            }),
            'ferry-skipped-bytes': header('bytes between the offset asked and the data that were not kept', {
              type: 'string',
              pattern: '^[0-9]+$',
            }),
            'ferry-complete': header('"true" once the run has ended and everything kept was returned', {
              type: 'string',
              enum: ['true', 'false'],
            }),
            'ferry-state': header('the execution state when the bytes were served', {
              type: 'string',
              enum: [...EXECUTION_STATES],
            }),
          },
          content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } },
        },
        '303': {
          description: `without follow or offset, an ended run whose stored stream is over ${LOG_INLINE_MAX_BYTES} bytes: see Location, a download link (no credentials to send) to the bytes exactly as stored; or page through it with offset and maxBytes`,
          headers: {
            location: header(
              'the download link, valid as long as result links are',
              {
                type: 'string',
                format: 'uri',
              },
              true,
            ),
            'ferry-stored-bytes': header('the size of the stored stream', {
              type: 'string',
              pattern: '^[0-9]+$',
            }),
          },
        },
        ...problems('400', '404', '409', ...ALWAYS),
      },
    },
  },
  '/v1/executions/{id}/result': {
    get: {
      operationId: 'getResult',
      summary: 'The result manifest with download links',
      parameters: [id],
      responses: {
        ...ok(200, 'manifest and links', 'ResultView'),
        ...problems('400', '404', '409', ...ALWAYS),
      },
    },
  },
  '/v1/executions/{id}/result/accept': {
    post: {
      operationId: 'acceptResult',
      summary: 'Accept the result (publishes it, if the job asked), optionally saying why',
      parameters: [id, idempotencyKey],
      requestBody: reviewBody,
      responses: {
        ...ok(200, 'the execution, its result ACCEPTED', 'Execution', replayed),
        ...problems(...POSTS, '404', '415', ...ALWAYS),
      },
    },
  },
  '/v1/executions/{id}/result/reject': {
    post: {
      operationId: 'rejectResult',
      summary: 'Reject the result (deletes what was stored), optionally saying why',
      parameters: [id, idempotencyKey],
      requestBody: reviewBody,
      responses: {
        ...ok(200, 'the execution, its result REJECTED', 'Execution', replayed),
        ...problems(...POSTS, '404', '415', ...ALWAYS),
      },
    },
  },
  '/v1/executions/{id}/uploads': {
    post: {
      operationId: 'signUploadLinks',
      summary:
        "Upload links for a Fargate task's publisher: presigned links to its own execution's result keys, for the holder of the upload secret",
      parameters: [id, uploadSecret, idempotencyKey],
      requestBody: {
        required: true,
        description: `the operations to sign, at most ${MAX_BODY_BYTES} bytes`,
        content: json(ref('UploadLinksBody')),
        'x-max-bytes': MAX_BODY_BYTES,
      },
      responses: {
        ...ok(200, 'the signed links, valid a few minutes', 'UploadLinks', replayed),
        '401': problemAnswer('no upload secret, or (locally) no valid bearer token', {
          'WWW-Authenticate': header(`"${UPLOAD_SECRET_HEADER}" when the upload secret is missing`, {
            type: 'string',
          }),
        }),
        '403': problemAnswer(
          "the upload secret is not one of this execution's, or a key asked for is not one its publisher writes (nothing is signed then); or refused by the local server's front door",
        ),
        '404': problemAnswer(
          'this Ferry hands out no upload links: its backend stores results itself (always so on the local server)',
        ),
        '409': problemAnswer(
          `the execution's run is not active and did not end in the last ${UPLOAD_GRACE_AFTER_END_SECONDS} s, or its result was reviewed; or a request with the same Idempotency-Key is still in progress`,
        ),
        ...problems('400', '413', '415', '422', '414', '431', '5XX'),
      },
    },
  },
  [`${TES_PREFIX}/service-info`]: {
    get: {
      operationId: 'tesGetServiceInfo',
      summary: 'TES: this service, in GA4GH service-info terms',
      tags: ['TES'],
      responses: { ...ok(200, 'the service', 'TesServiceInfo'), ...problems(...ALWAYS) },
    },
  },
  [`${TES_PREFIX}/tasks`]: {
    get: {
      operationId: 'tesListTasks',
      summary: 'TES: the caller’s tasks (its executions), newest first, a page at a time',
      tags: ['TES'],
      parameters: [
        query('name_prefix', 'only tasks whose name starts with this', { type: 'string' }),
        query('state', 'only tasks in this TES state', { type: 'string', enum: [...TES_STATES] }),
        {
          ...query('tag_key', 'only tasks with this tag; with tag_value at the same place, that value', {
            type: 'array',
            items: { type: 'string' },
          }),
          explode: true,
        },
        {
          ...query('tag_value', 'the value for the tag_key at the same place; empty or absent matches any', {
            type: 'array',
            items: { type: 'string' },
          }),
          explode: true,
        },
        query('page_size', 'tasks per page', range(TES_PAGE_SIZE)),
        query('page_token', 'next_page_token of the page before', { type: 'string' }),
        tesView,
      ],
      responses: { ...ok(200, 'a page of tasks', 'TesListTasksResponse'), ...problems('400', ...ALWAYS) },
    },
    post: {
      operationId: 'tesCreateTask',
      summary: 'TES: bid on a task and, when Ferry will run it, queue it (400 with the reason when not)',
      tags: ['TES'],
      parameters: [idempotencyKey],
      requestBody: {
        required: true,
        content: json(ref('TesTask')),
        'x-max-bytes': MAX_BODY_BYTES,
      },
      responses: {
        ...ok(200, 'the task, queued', 'TesCreateTaskResponse', replayed),
        ...problems(...POSTS, '415', ...ALWAYS),
      },
    },
  },
  [`${TES_PREFIX}/tasks/{id}`]: {
    get: {
      operationId: 'tesGetTask',
      summary: 'TES: one task, in the view asked for',
      tags: ['TES'],
      parameters: [id, tesView],
      responses: { ...ok(200, 'the task', 'TesTaskView'), ...problems('400', '404', ...ALWAYS) },
    },
  },
  [`${TES_PREFIX}/tasks/{id}:cancel`]: {
    post: {
      operationId: 'tesCancelTask',
      summary: 'TES: cancel a queued, initializing or running task',
      tags: ['TES'],
      parameters: [id, idempotencyKey],
      responses: {
        ...ok(200, 'cancelled, or stopping (CANCELING)', 'TesCancelTaskResponse', replayed),
        ...problems(...POSTS, '404', ...ALWAYS),
      },
    },
  },
  '/v1/node': {
    get: {
      operationId: 'describeNode',
      summary: 'Capacity, usage, per-job limits, backend and version',
      responses: { ...ok(200, 'the node', 'Node'), ...problems(...ALWAYS) },
    },
  },
  '/v1/openapi.json': {
    get: {
      operationId: 'getOpenApiDocument',
      summary: 'This document',
      responses: {
        '200': { description: 'OpenAPI 3.1', content: json({ type: 'object' }) },
        ...problems(...ALWAYS),
      },
    },
  },
};

/** JSON Schemas of a registry of zod schemas, referring to each other under components. */
function componentSchemas(schemas: Record<string, z.ZodType>, io: 'input' | 'output') {
  const registry = z.registry<{ id: string }>();
  for (const [name, schema] of Object.entries(schemas)) registry.add(schema, { id: name });
  const generated = z.toJSONSchema(registry, {
    io,
    unrepresentable: 'any',
    uri: (name) => `#/components/schemas/${name}`,
  });
  return Object.fromEntries(
    Object.entries(generated.schemas).map(([name, { $schema: _schema, $id: _id, ...schema }]) => [
      name,
      schema,
    ]),
  );
}

export function openApiDocument() {
  return {
    openapi: '3.1.0',
    info: {
      title: 'Ferry',
      version: FERRY_VERSION,
      description:
        'Bid on, run and collect container jobs. Errors are RFC 9457 problem documents ' +
        '(application/problem+json); a method a path does not take is a 405 with an Allow header, ' +
        'an unknown path a 404.',
    },
    security: [{ bearerAuth: [] }],
    paths: PATHS,
    components: {
      securitySchemes: {
        bearerAuth: {
          type: 'http',
          scheme: 'bearer',
          description:
            'Locally, a bearer token is the caller’s identity (required when the server sets FERRY_TOKEN). ' +
            'On AWS the API takes IAM (SigV4) instead.',
        },
      },
      schemas: {
        ...componentSchemas(
          { JobSpec: JobSpecSchema, ReviewBody: ReviewBodySchema, UploadLinksBody: UploadLinksBodySchema },
          'input',
        ),
        ...componentSchemas(
          {
            BidReply: BidReplySchema,
            Execution: ExecutionSchema,
            ExecutionPage: ExecutionPageSchema,
            ResultView: ResultViewSchema,
            Node: NodeSchema,
            StateCounts: StateCountsSchema,
            QueuePlace: QueuePlaceSchema,
            UploadLinks: UploadLinksSchema,
            Problem: ProblemSchema,
            TesTaskView: TesTaskViewSchema,
            TesListTasksResponse: TesListTasksSchema,
            TesCreateTaskResponse: TesCreateTaskSchema,
            TesCancelTaskResponse: TesCancelTaskSchema,
            TesServiceInfo: TesServiceInfoSchema,
          },
          'output',
        ),
        ...componentSchemas({ TesTask: TesTaskSchema }, 'input'),
      },
      responses: Object.fromEntries(
        Object.entries(PROBLEMS).map(([status, response]) => [
          `Problem${status}`,
          { ...response, content: { 'application/problem+json': { schema: ref('Problem') } } },
        ]),
      ),
    },
  };
}

/** The API's routes as the document lists them, for checking it against the router. */
export const documentedRoutes = (): string[] =>
  Object.entries(PATHS).flatMap(([path, operations]) =>
    Object.keys(operations).map((m) => `${m.toUpperCase()} ${path}`),
  );
