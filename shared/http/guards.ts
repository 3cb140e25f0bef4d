// What every HTTP server of Ferry's on a person's machine checks before it acts on a request
// (`ferry serve`, `ferry dashboard`): a well-formed target, a Host name it answers to (against
// DNS rebinding), no other site's page behind the request (against CSRF), the bearer token it
// was given, and a body of bounded size; and how it refuses one, with a problem document.
import { createHash, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import { Forbidden, PayloadTooLarge, Unauthorized, UriTooLong, ValidationError } from '../errors.ts';
import { errorResponse } from './problem.ts';

/** The longest request target read; Ferry's own are a few hundred characters at most. */
const MAX_TARGET_LENGTH = 8192;

/**
 * The request target as a URL on this server. Only origin-form (`/path?query`) is taken: an
 * absolute URL names another server, and a path must be valid percent-encoding throughout.
 */
export function requestTarget(target: string): URL {
  if (target.length > MAX_TARGET_LENGTH) {
    throw new UriTooLong(
      `the request target is ${target.length} characters; at most ${MAX_TARGET_LENGTH} are read`,
    );
  }
  const shown = JSON.stringify(target.length > 80 ? `${target.slice(0, 80)}…` : target);
  // Joined to a fixed origin rather than resolved against it, so `//host/...` stays a path.
  const url =
    target.startsWith('/') && URL.canParse(`http://ferry${target}`)
      ? new URL(`http://ferry${target}`)
      : undefined;
  if (url === undefined) {
    throw new ValidationError(`the request target must be a path beginning with /, got ${shown}`, [
      { field: 'path', message: 'not an origin-form request target' },
    ]);
  }
  try {
    decodeURIComponent(url.pathname);
  } catch {
    throw new ValidationError(`the path is not valid percent-encoded UTF-8: ${shown}`, [
      { field: 'path', message: 'malformed percent-encoding' },
    ]);
  }
  return url;
}

/** Which Host names and web origins the API answers, from where the server listens. */
export interface RequestRules {
  /** Host names accepted; undefined when listening beyond loopback, where any name may reach it. */
  readonly hosts?: ReadonlySet<string>;
  readonly origins: ReadonlySet<string>;
  /** The setting that adds origins (and their hosts), named in refusals; none when there is none. */
  readonly widenedBy?: string;
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];

export function requestRules(
  host: string,
  port: number,
  allowed: { readonly origins: readonly string[]; readonly setting: string } = { origins: [], setting: '' },
): RequestRules {
  const allowedOrigins = allowed.origins;
  const widenedBy = allowed.setting === '' ? {} : { widenedBy: allowed.setting };
  const bound = host.includes(':') ? `[${host}]` : host.toLowerCase();
  const loopback = bound === 'localhost' || bound === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(bound);
  const own = [...new Set([...LOOPBACK_NAMES, bound])].map(
    (name) => new URL(`http://${name}:${port}`).origin,
  );
  const origins = new Set([...own, ...allowedOrigins]);
  if (!loopback) return { origins, ...widenedBy };
  const allowedHosts = allowedOrigins.map((origin) => new URL(origin).hostname);
  return { hosts: new Set([...LOOPBACK_NAMES, bound, ...allowedHosts]), origins, ...widenedBy };
}

/**
 * Refuses what a web page on another site could make a browser send. A page cannot set Host,
 * so a name the server does not answer to means DNS rebinding; a browser always names the
 * page's origin, and `Sec-Fetch-Site`, on what it sends.
 */
export function checkHost(request: http.IncomingMessage, rules: RequestRules): void {
  const host = request.headers.host;
  if (rules.hosts === undefined || host === undefined) return;
  const name = URL.canParse(`http://${host}`) ? new URL(`http://${host}`).hostname : undefined;
  if (name === undefined || !rules.hosts.has(name)) {
    throw new Forbidden(
      `this server does not answer to the host ${JSON.stringify(host)}; use ${[...rules.hosts].join(', ')}` +
        (rules.widenedBy === undefined ? '' : ` (a web origin in ${rules.widenedBy} adds its host)`),
    );
  }
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export function checkOrigin(request: http.IncomingMessage, rules: RequestRules): void {
  const origin = request.headers.origin;
  if (origin !== undefined) {
    const normal = URL.canParse(origin) ? new URL(origin).origin : origin;
    if (!rules.origins.has(normal)) {
      throw new Forbidden(
        `requests from pages on ${origin} are refused` +
          (rules.widenedBy === undefined ? '' : `; allow it with ${rules.widenedBy}`),
      );
    }
  }
  if (request.headers['sec-fetch-site'] === 'cross-site' && !SAFE_METHODS.has(request.method ?? 'GET')) {
    throw new Forbidden('a request sent by a page on another site is refused');
  }
}

/**
 * The token of an `Authorization: Bearer …` header, if the request has one. The scheme name is
 * case-insensitive (RFC 9110 §11.1).
 */
export function bearerTokenOf(header: string | undefined): string | undefined {
  return header === undefined ? undefined : /^bearer[ \t]+(\S+)[ \t]*$/i.exec(header)?.[1];
}

/** A fixed-length digest, so comparing two of them takes the same time whatever they hold. */
const digestOf = (text: string): Buffer => createHash('sha256').update(text).digest();

/** Refuses a request whose bearer token is missing or is not `expected`; `named` says where it comes from. */
export function checkBearer(token: string | undefined, expected: string, named: string): void {
  if (token === undefined) {
    throw new Unauthorized(`a bearer token is required (Authorization: Bearer <${named}>)`, {
      challenge: 'Bearer realm="ferry"',
    });
  }
  if (!timingSafeEqual(digestOf(token), digestOf(expected))) {
    throw new Unauthorized('the bearer token is not valid', {
      challenge: 'Bearer realm="ferry", error="invalid_token"',
    });
  }
}

/** Answers with the error's problem document (and the challenge a 401 carries). */
export function sendProblem(
  response: http.ServerResponse,
  error: unknown,
  extraHeaders: Record<string, string> = {},
): void {
  const reply = errorResponse(error);
  response.writeHead(reply.statusCode ?? 500, {
    ...(reply.headers as Record<string, string>),
    ...extraHeaders,
  });
  response.end(reply.body);
}

/** The request's body, refused past `limit` bytes (declared or sent). */
async function readBody(request: http.IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(request.headers['content-length'] ?? '0');
  if (declared > limit)
    throw new PayloadTooLarge(`the body is ${declared} bytes; at most ${limit} bytes are accepted`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > limit)
      throw new PayloadTooLarge(`the body is over ${limit} bytes; at most ${limit} bytes are accepted`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * The request's body; past `limit` bytes (or when it cannot be read) the request is answered
 * and its connection closed, so the rest of it is not read, and the result is undefined.
 */
export async function readBodyOrRefuse(
  request: http.IncomingMessage,
  response: http.ServerResponse,
  limit: number,
): Promise<Buffer | undefined> {
  try {
    return await readBody(request, limit);
  } catch (error) {
    sendProblem(response, error, { connection: 'close' });
    request.destroy();
    return undefined;
  }
}
