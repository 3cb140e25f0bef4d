// The OpenAPI document of Ferry's HTTP API, generated from the same zod schemas that
// validate requests, so the published contract cannot drift from what the server accepts.
import { z } from 'zod';
import { JobSpecSchema } from '../domain/job-spec.ts';
import { EXECUTION_STATES } from '../domain/states.ts';
import { FERRY_VERSION } from '../version.ts';

type Operation = {
  summary: string;
  parameters?: object[];
  requestBody?: object;
  responses: Record<string, object>;
};

const problem = { $ref: '#/components/schemas/Problem' };
const json = (schema: object) => ({ 'application/json': { schema } });
const problems = (...statuses: number[]) =>
  Object.fromEntries(
    statuses.map((status) => [
      String(status),
      { description: 'problem', content: { 'application/problem+json': { schema: problem } } },
    ]),
  );
const ok = (status: number, description: string) => ({
  [String(status)]: { description, content: json({ type: 'object' }) },
});
const id = {
  name: 'id',
  in: 'path',
  required: true,
  schema: { type: 'string', pattern: '^ex_[0-9a-z]{26}$' },
};
const idempotencyKey = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  schema: { type: 'string', maxLength: 255 },
};
const jobBody = { required: true, content: json({ $ref: '#/components/schemas/JobSpec' }) };
const states = { type: 'string', enum: [...EXECUTION_STATES] };

const PATHS: Record<string, Record<string, Operation>> = {
  '/v1/bids': {
    post: {
      summary: 'Ask for a bid on a job: accepted with its size and estimate, or declined with the reason',
      parameters: [idempotencyKey],
      requestBody: jobBody,
      responses: { ...ok(201, 'the bid and its execution'), ...problems(400, 413) },
    },
  },
  '/v1/bids/{id}/accept': {
    post: {
      summary: 'Accept a bid: the job is queued',
      parameters: [id],
      responses: { ...ok(202, 'QUEUED'), ...problems(400, 404, 409) },
    },
  },
  '/v1/bids/{id}/reject': {
    post: {
      summary: 'Reject a bid',
      parameters: [id],
      responses: { ...ok(200, 'BID_REJECTED'), ...problems(400, 404, 409) },
    },
  },
  '/v1/jobs': {
    post: {
      summary: 'Ask for a bid and accept it in one call',
      parameters: [idempotencyKey],
      requestBody: jobBody,
      responses: { ...ok(202, 'the queued execution'), ...problems(400, 413, 422) },
    },
  },
  '/v1/executions': {
    get: {
      summary: "The caller's executions in any of the given states, newest first",
      parameters: [
        {
          name: 'state',
          in: 'query',
          schema: { type: 'array', items: states },
          style: 'form',
          explode: true,
        },
        { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 500, default: 50 } },
        { name: 'cursor', in: 'query', schema: { type: 'string' } },
      ],
      responses: { ...ok(200, 'a page: items and nextCursor'), ...problems(400) },
    },
  },
  '/v1/executions/{id}': {
    get: {
      summary: 'An execution',
      parameters: [id],
      responses: { ...ok(200, 'the execution'), ...problems(400, 404) },
    },
  },
  '/v1/executions/{id}/wait': {
    get: {
      summary:
        'Hold until the execution ends (or reaches a given state) or the timeout; header ferry-wait-done',
      parameters: [
        id,
        {
          name: 'timeoutSeconds',
          in: 'query',
          schema: { type: 'integer', minimum: 0, maximum: 3600, default: 20 },
        },
        {
          name: 'state',
          in: 'query',
          schema: { type: 'array', items: states },
          style: 'form',
          explode: true,
        },
      ],
      responses: { ...ok(200, 'the execution as it is'), ...problems(400, 404) },
    },
  },
  '/v1/executions/{id}/cancel': {
    post: {
      summary: 'Cancel a queued, launching or running execution',
      parameters: [id],
      responses: { ...ok(202, 'the execution'), ...problems(400, 404, 409) },
    },
  },
  '/v1/executions/{id}/logs': {
    get: {
      summary: 'Stored output; with follow or offset, the next bytes by stream position (live while running)',
      parameters: [
        id,
        {
          name: 'stream',
          in: 'query',
          schema: { type: 'string', enum: ['stdout', 'stderr'], default: 'stdout' },
        },
        { name: 'follow', in: 'query', schema: { type: 'boolean' } },
        { name: 'offset', in: 'query', schema: { type: 'integer', minimum: 0 } },
        { name: 'waitSeconds', in: 'query', schema: { type: 'integer', minimum: 0 } },
      ],
      responses: {
        '200': {
          description: 'bytes; headers ferry-next-offset, ferry-skipped-bytes, ferry-complete',
          content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } },
        },
        ...problems(400, 404, 409),
      },
    },
  },
  '/v1/executions/{id}/result': {
    get: {
      summary: 'The result manifest with download links',
      parameters: [id],
      responses: { ...ok(200, 'manifest and links'), ...problems(400, 404, 409) },
    },
  },
  '/v1/executions/{id}/result/accept': {
    post: {
      summary: 'Accept the result (publishes it, if the job asked)',
      parameters: [id],
      responses: { ...ok(200, 'the execution'), ...problems(400, 404, 409) },
    },
  },
  '/v1/executions/{id}/result/reject': {
    post: {
      summary: 'Reject the result (deletes what was stored)',
      parameters: [id],
      responses: { ...ok(200, 'the execution'), ...problems(400, 404, 409) },
    },
  },
  '/v1/node': {
    get: { summary: 'Capacity, usage, per-job limits, backend and version', responses: ok(200, 'the node') },
  },
  '/v1/openapi.json': {
    get: { summary: 'This document', responses: ok(200, 'OpenAPI 3.1') },
  },
};

export function openApiDocument() {
  const { $schema: _ignored, ...jobSpec } = z.toJSONSchema(JobSpecSchema, {
    io: 'input',
    unrepresentable: 'any',
  });
  return {
    openapi: '3.1.0',
    info: { title: 'Ferry', version: FERRY_VERSION, description: 'Bid on, run and collect container jobs.' },
    paths: PATHS,
    components: {
      schemas: {
        JobSpec: jobSpec,
        Problem: {
          type: 'object',
          description: 'RFC 9457 problem details; `errors` names each field that is wrong',
          properties: {
            type: { type: 'string' },
            title: { type: 'string' },
            status: { type: 'integer' },
            detail: { type: 'string' },
            errors: {
              type: 'array',
              items: {
                type: 'object',
                properties: { field: { type: 'string' }, message: { type: 'string' } },
              },
            },
          },
          required: ['type', 'title', 'status', 'detail'],
        },
      },
    },
  };
}

/** The API's routes as the document lists them, for checking it against the router. */
export const documentedRoutes = (): string[] =>
  Object.entries(PATHS).flatMap(([path, operations]) =>
    Object.keys(operations).map((m) => `${m.toUpperCase()} ${path}`),
  );
