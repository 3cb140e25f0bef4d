// The Lambda API handler on its own, as API Gateway calls it: what it answers a request
// that reaches it without the identity the IAM authorizer adds.
import type { Context } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import { createApiHandler } from '../../functions/api.ts';
import { apiGatewayEvent } from '../../shared/http/api-gateway-event.ts';
import { buildTestCore } from '../support/core.ts';

const context = { getRemainingTimeInMillis: () => 30_000 } as Context;

describe('the Lambda API handler', () => {
  it('answers a request without a caller identity 401 with the AWS Signature Version 4 challenge', async () => {
    const { core } = await buildTestCore();
    const event = apiGatewayEvent({
      method: 'GET',
      path: '/v1/executions',
      query: '',
      headers: {},
      caller: '',
    });
    const { authorizer: _, ...requestContext } = event.requestContext;

    const reply = await createApiHandler(core)({ ...event, requestContext } as typeof event, context);

    expect(reply.statusCode).toBe(401);
    expect(reply.headers?.['content-type']).toBe('application/problem+json');
    expect(reply.headers?.['www-authenticate']).toBe('AWS4-HMAC-SHA256');
  });
});
