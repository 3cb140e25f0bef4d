// Builds the API Gateway HTTP API (payload 2.0) event for a request, with the caller's
// identity where the IAM authorizer puts it. The local server turns every HTTP request into
// one of these, so the `api` handler sees exactly what it sees behind API Gateway.
import { randomUUID } from 'node:crypto';
import type { APIGatewayProxyEventV2WithIAMAuthorizer } from 'aws-lambda';

export interface HttpRequestParts {
  readonly method: string;
  readonly path: string;
  /** The raw query string, without the leading `?`. */
  readonly query: string;
  /** Header names in lower case. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: Buffer;
  readonly caller: string;
  readonly sourceIp?: string;
  readonly protocol?: string;
  readonly accountId?: string;
  /** What API Gateway's IAM authorizer reports: the signing key and the principal's unique id. */
  readonly accessKey?: string;
  readonly userId?: string;
  readonly apiId?: string;
  readonly routeKey?: string;
}

export function apiGatewayEvent(request: HttpRequestParts): APIGatewayProxyEventV2WithIAMAuthorizer {
  const now = new Date();
  const accountId = request.accountId ?? '000000000000';
  // API Gateway joins repeated query parameters with commas.
  const query: Record<string, string> = {};
  for (const [name, value] of new URLSearchParams(request.query)) {
    query[name] = name in query ? `${query[name]},${value}` : value;
  }
  const hasBody = request.body !== undefined && request.body.length > 0;
  return {
    version: '2.0',
    routeKey: request.routeKey ?? '$default',
    rawPath: request.path,
    rawQueryString: request.query,
    headers: { ...request.headers },
    ...(request.query === '' ? {} : { queryStringParameters: query }),
    requestContext: {
      accountId,
      apiId: request.apiId ?? 'local',
      domainName: request.headers.host ?? 'localhost',
      domainPrefix: 'local',
      http: {
        method: request.method,
        path: request.path,
        protocol: request.protocol ?? 'HTTP/1.1',
        sourceIp: request.sourceIp ?? '127.0.0.1',
        userAgent: request.headers['user-agent'] ?? '',
      },
      requestId: randomUUID(),
      routeKey: request.routeKey ?? '$default',
      stage: '$default',
      time: now.toISOString(),
      timeEpoch: now.getTime(),
      authorizer: {
        iam: {
          accessKey: request.accessKey ?? 'local',
          accountId,
          callerId: request.caller,
          cognitoIdentity: null as never,
          principalOrgId: null as never,
          userArn: request.caller,
          userId: request.userId ?? request.caller,
        },
      },
    },
    ...(hasBody
      ? { body: request.body?.toString('base64'), isBase64Encoded: true }
      : { isBase64Encoded: false }),
  } as APIGatewayProxyEventV2WithIAMAuthorizer;
}
