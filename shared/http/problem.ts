// The one mapping from errors to HTTP answers: RFC 9457 problem documents. Ferry's own
// errors show their detail; anything else is a 500 whose internals stay in the logs.
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { isFerryError, Unauthorized } from '../errors.ts';

export interface Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly [extension: string]: unknown;
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Content Too Large',
  414: 'URI Too Long',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

export function problemOf(error: unknown): Problem {
  if (isFerryError(error)) {
    return {
      type: `https://ferry.dev/problems/${error.code}`,
      title: TITLES[error.status] ?? 'Error',
      status: error.status,
      detail: error.message,
      ...error.details,
    };
  }
  // middy's own HTTP errors (e.g. from the router) carry a status and an `expose` flag.
  const http = error as { statusCode?: number; expose?: boolean; message?: string };
  if (typeof http.statusCode === 'number' && http.statusCode < 500 && http.expose !== false) {
    return {
      type: 'about:blank',
      title: TITLES[http.statusCode] ?? 'Error',
      status: http.statusCode,
      detail: http.message ?? 'request refused',
    };
  }
  return {
    type: 'about:blank',
    title: TITLES[500] ?? 'Internal Server Error',
    status: 500,
    detail: 'Ferry could not complete the request; the error is in the server log.',
  };
}

export function problemResponse(problem: Problem): APIGatewayProxyStructuredResultV2 {
  const allow: Record<string, string> = Array.isArray(problem.allow)
    ? { allow: problem.allow.join(', ') }
    : {};
  return {
    statusCode: problem.status,
    headers: { 'content-type': 'application/problem+json', ...allow },
    body: JSON.stringify(problem),
  };
}

/** The reply to an error: its problem document, with the challenge a 401 must carry. */
export function errorResponse(error: unknown): APIGatewayProxyStructuredResultV2 {
  const reply = problemResponse(problemOf(error));
  if (error instanceof Unauthorized) {
    return { ...reply, headers: { ...reply.headers, 'www-authenticate': error.challenge } };
  }
  return reply;
}

export function jsonResponse(
  statusCode: number,
  body: unknown,
  headers: Record<string, string> = {},
): APIGatewayProxyStructuredResultV2 {
  return {
    statusCode,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  };
}
