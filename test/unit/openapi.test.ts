// biome-ignore-all lint/suspicious/noExplicitAny: the document is JSON; the tests look inside it
import { describe, expect, it } from 'vitest';
import { routes } from '../../functions/api.ts';
import {
  documentedRoutes,
  ID_PATTERN,
  MAX_BODY_BYTES,
  openApiDocument,
  QUERY_LIMITS,
} from '../../shared/http/openapi.ts';
import { buildTestCore } from '../support/core.ts';

describe('OpenAPI document', () => {
  it('lists exactly the routes the API serves', async () => {
    const { core } = await buildTestCore();
    const served = routes(core).map((r) => `${r.method} ${r.path}`);
    expect(documentedRoutes().sort()).toEqual(served.sort());
  });

  it('describes the job spec from the schema that validates it', () => {
    const spec = openApiDocument().components.schemas.JobSpec as {
      required?: string[];
      oneOf?: unknown[];
      additionalProperties?: unknown;
      properties: Record<string, { additionalProperties?: unknown }>;
    };
    expect(spec.required).toBeUndefined();
    expect(spec.oneOf).toEqual([{ required: ['image', 'command'] }, { required: ['steps'] }]);
    expect(spec.additionalProperties).toBe(false);
    expect(spec.properties.resources?.additionalProperties).toBe(false);
    expect(Object.keys(spec.properties)).toContain('outputLimits');
  });
});

type Json = Record<string, any>;
const document = () => openApiDocument() as unknown as Json;
const operations = () =>
  Object.entries(document().paths as Json).flatMap(([path, byMethod]) =>
    Object.entries(byMethod as Json).map(([method, operation]) => ({
      path,
      method,
      operation: operation as Json,
    })),
  );
/** A response with its `$ref` to components.responses followed. */
const response = (operation: Json, status: string): Json | undefined => {
  const found = operation.responses[status] as Json | undefined;
  if (found?.$ref === undefined) return found;
  return document().components.responses[String(found.$ref).split('/').pop() as string];
};

describe('what the OpenAPI document promises', () => {
  it('declares bearer authentication and applies it to every operation', () => {
    expect(document().components.securitySchemes.bearerAuth).toMatchObject({
      type: 'http',
      scheme: 'bearer',
    });
    expect(document().security).toEqual([{ bearerAuth: [] }]);
    for (const { operation } of operations()) expect(operation.security).toBeUndefined();
  });

  it('lists 401 (with WWW-Authenticate) and 5XX on every operation, as problem+json', () => {
    for (const { path, method, operation } of operations()) {
      const unauthorized = response(operation, '401');
      expect(unauthorized, `${method} ${path}`).toBeDefined();
      expect(unauthorized?.headers?.['WWW-Authenticate']).toBeDefined();
      expect(Object.keys(response(operation, '5XX')?.content ?? {})).toEqual(['application/problem+json']);
    }
  });

  it('lists the body limit, idempotency and content-type statuses on every POST', () => {
    for (const { path, method, operation } of operations().filter((o) => o.method === 'post')) {
      const statuses = Object.keys(operation.responses);
      expect(statuses, `${method} ${path}`).toEqual(expect.arrayContaining(['400', '409', '413', '422']));
      expect(operation.parameters.map((p: Json) => p.name)).toContain('Idempotency-Key');
      const success = statuses.find((s) => s.startsWith('2')) as string;
      expect(operation.responses[success].headers['idempotent-replayed']).toBeDefined();
      if (operation.requestBody !== undefined) {
        expect(statuses).toContain('415');
        expect(operation.requestBody['x-max-bytes']).toBe(MAX_BODY_BYTES);
      }
    }
  });

  it('gives every JSON success a schema from the components, never a bare object', () => {
    const schemas = document().components.schemas as Json;
    for (const { path, method, operation } of operations()) {
      if (path === '/v1/openapi.json') continue;
      for (const [status, reply] of Object.entries(operation.responses as Json)) {
        if (!status.startsWith('2')) continue;
        // A reply with nothing in it (204) carries no schema.
        if (status === '204') {
          expect((reply as Json).content, `${method} ${path} ${status}`).toBeUndefined();
          continue;
        }
        const schema = (reply as Json).content['application/json']?.schema as Json | undefined;
        if (path.endsWith('/logs')) {
          expect((reply as Json).content['application/octet-stream'].schema).toMatchObject({
            format: 'binary',
          });
          continue;
        }
        const name = String(schema?.$ref ?? '')
          .split('/')
          .pop() as string;
        // TES answers a cancel with an empty object, and says so.
        expect(schemas[name], `${method} ${path} ${status}`).toMatchObject(
          name === 'TesCancelTaskResponse'
            ? { type: 'object', properties: {}, additionalProperties: false }
            : { type: 'object', required: expect.any(Array) },
        );
      }
    }
    expect(schemas.Execution.additionalProperties).toBe(false);
    expect(schemas.Execution.properties.history.items.properties).toHaveProperty('justification');
    expect(schemas.BidReply.properties.execution).toEqual({ $ref: '#/components/schemas/Execution' });
    expect(schemas.Problem.properties).toHaveProperty('errors');
  });

  it('publishes the limits the server enforces on ids, query parameters and bodies', () => {
    const byPath = Object.fromEntries(operations().map((o) => [`${o.method} ${o.path}`, o.operation]));
    const parameter = (key: string, name: string) =>
      ((byPath[key]?.parameters ?? []) as Json[]).find((p) => p.name === name)?.schema as Json;
    expect(parameter('get /v1/executions/{id}', 'id').pattern).toBe(ID_PATTERN.source);
    expect(parameter('get /v1/executions', 'limit')).toMatchObject({ minimum: 1, maximum: 500 });
    expect(parameter('get /v1/executions/{id}/wait', 'timeoutSeconds')).toMatchObject({
      minimum: 0,
      maximum: 3600,
    });
    expect(parameter('get /v1/executions/{id}/logs', 'maxBytes')).toMatchObject({
      minimum: 1,
      maximum: QUERY_LIMITS.logMaxBytes.max,
    });
    expect(parameter('get /v1/executions/{id}/logs', 'waitSeconds')).toMatchObject({ maximum: 3600 });
    expect(parameter('post /v1/jobs', 'Idempotency-Key')).toMatchObject({ minLength: 1, maxLength: 255 });
    const spec = document().components.schemas.JobSpec as Json;
    expect(spec.properties.image).toMatchObject({ maxLength: 512, pattern: expect.any(String) });
    expect(spec.properties.command).toMatchObject({ minItems: 1, maxItems: 4096 });
    expect(document().components.schemas.ReviewBody).toMatchObject({
      additionalProperties: false,
      properties: { justification: { minLength: 1, maxLength: 1000 } },
    });
  });

  it('documents the headers the server sends', () => {
    const byPath = Object.fromEntries(operations().map((o) => [`${o.method} ${o.path}`, o.operation]));
    expect(byPath['get /v1/executions/{id}/wait']?.responses['200'].headers['ferry-wait-done']).toMatchObject(
      {
        required: true,
      },
    );
    expect(Object.keys(byPath['get /v1/executions/{id}/logs']?.responses['200'].headers)).toEqual(
      expect.arrayContaining(['ferry-next-offset', 'ferry-skipped-bytes', 'ferry-complete']),
    );
  });
});
