// A small client for Ferry's HTTP API, used by the CLI (and by tests and the benchmark).
// Against a deployed Ferry (API Gateway with IAM authorization) requests are signed with
// SigV4, service `execute-api`, with credentials from the standard AWS chain.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: { title?: string; detail?: string; [key: string]: unknown },
  ) {
    // API Gateway's own refusals (an IAM denial, a throttle) say it in `message` or `Message`.
    const said = problem.detail ?? problem.message ?? problem.Message ?? problem.title;
    super(typeof said === 'string' && said !== '' ? said : `HTTP ${status}`);
  }
}

export class Unreachable extends Error {}

export interface Reply<T> {
  readonly status: number;
  readonly headers: Headers;
  readonly body: T;
}

/** Adds authentication headers to a request about to be sent. */
export interface RequestSigner {
  sign(request: {
    readonly method: string;
    readonly url: URL;
    readonly headers: Readonly<Record<string, string>>;
    readonly body?: string;
  }): Promise<Record<string, string>>;
}

export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
  readonly expiration?: Date;
}

/** The region of an API Gateway endpoint (`{id}.execute-api.{region}.amazonaws.com`), if it is one. */
export function executeApiRegion(url: string): string | undefined {
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch {
    return undefined;
  }
  return /^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$/.exec(host)?.[1];
}

/** Signs requests with SigV4 for API Gateway (`execute-api`), as an IAM-authorized route expects. */
export function sigv4Signer(options: {
  readonly region: string;
  readonly credentials: AwsCredentials | (() => Promise<AwsCredentials>);
  /** For tests: the signing time. */
  readonly now?: () => Date;
}): RequestSigner {
  // Loaded on first use: a command that signs nothing does not pay for them at start.
  let signing: Promise<import('@smithy/signature-v4').SignatureV4> | undefined;
  const signerNow = () => {
    signing ??= Promise.all([import('@smithy/signature-v4'), import('@aws-crypto/sha256-js')]).then(
      ([{ SignatureV4 }, { Sha256 }]) =>
        new SignatureV4({
          service: 'execute-api',
          region: options.region,
          credentials: options.credentials,
          sha256: Sha256,
          // API Gateway checks no payload-hash header; the payload is in the signature either way.
          applyChecksum: false,
        }),
    );
    return signing;
  };
  return {
    async sign({ method, url, headers, body }) {
      const signer = await signerNow();
      const query: Record<string, string | string[]> = {};
      for (const key of new Set(url.searchParams.keys())) {
        const values = url.searchParams.getAll(key);
        query[key] = values.length === 1 ? (values[0] ?? '') : values;
      }
      const signed = await signer.sign(
        {
          method,
          protocol: url.protocol,
          hostname: url.hostname,
          ...(url.port === '' ? {} : { port: Number(url.port) }),
          path: url.pathname,
          query,
          // The host is signed; fetch sends the same one from the URL.
          headers: { ...headers, host: url.host },
          ...(body === undefined ? {} : { body }),
        },
        options.now === undefined ? {} : { signingDate: options.now() },
      );
      const { host: _host, ...rest } = signed.headers;
      return rest;
    },
  };
}

/** A SigV4 signer with credentials from the standard chain (environment, profile, SSO, IMDS, …). */
export async function sigv4FromDefaultChain(region: string): Promise<RequestSigner> {
  const { defaultProvider } = await import('@aws-sdk/credential-provider-node');
  return sigv4Signer({ region, credentials: defaultProvider() });
}

/** Why a fetch failed, as its cause says it (undici puts the socket's error there). */
export const reasonOf = (error: unknown): string =>
  (error as Error & { cause?: Error }).cause?.message ?? (error as Error).message ?? String(error);

/** The error an API's failed reply stands for: its problem document, or whatever text it sent. */
export function apiErrorOf(status: number, statusText: string, text: string): ApiError {
  let problem: ApiError['problem'];
  try {
    const parsed = JSON.parse(text) as unknown;
    problem =
      typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)
        ? (parsed as ApiError['problem'])
        : { detail: text };
  } catch {
    problem = { detail: text.trim().slice(0, 300) || statusText };
  }
  return new ApiError(status, problem);
}

/** RFC 3986 encoding, as SigV4 canonicalises a query: a space is %20, never `+`. */
const rfc3986 = (text: string): string =>
  encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/**
 * A request to the API at `baseUrl`: its URL, and its headers with the caller's identity added
 * (signed, or the bearer token). A signed request's query is sent as it was signed, so that no
 * server can read a `+` differently from the signature's `%20`.
 */
export async function prepareRequest(
  baseUrl: string,
  pathAndQuery: string,
  request: {
    readonly method: string;
    readonly headers: Readonly<Record<string, string>>;
    readonly body?: string;
    readonly token?: string;
    readonly signer?: RequestSigner;
  },
): Promise<{ url: URL; headers: Record<string, string> }> {
  // API Gateway's stage URL ends in a slash; the paths here begin with one.
  const url = new URL(`${baseUrl.replace(/\/+$/, '')}${pathAndQuery}`);
  if (request.signer === undefined) {
    const headers = { ...request.headers };
    if (request.token !== undefined) headers.authorization = `Bearer ${request.token}`;
    return { url, headers };
  }
  const pairs = [...url.searchParams].map(([name, value]) => `${rfc3986(name)}=${rfc3986(value)}`);
  url.search = pairs.length === 0 ? '' : `?${pairs.join('&')}`;
  // A signed request carries its identity in the signature; a bearer token would replace it.
  const headers = await request.signer.sign({
    method: request.method,
    url,
    headers: request.headers,
    ...(request.body === undefined ? {} : { body: request.body }),
  });
  return { url, headers };
}

export class FerryClient {
  constructor(
    readonly baseUrl: string,
    private readonly token?: string,
    private readonly signer?: RequestSigner,
  ) {}

  private async request(
    method: string,
    path: string,
    init: { body?: unknown; headers?: Record<string, string> } = {},
  ) {
    const body = init.body === undefined ? undefined : JSON.stringify(init.body);
    const { url, headers } = await prepareRequest(this.baseUrl, path, {
      method,
      headers: { ...init.headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body }),
      ...(this.token === undefined ? {} : { token: this.token }),
      ...(this.signer === undefined ? {} : { signer: this.signer }),
    });
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers,
        redirect: 'manual',
        ...(body === undefined ? {} : { body }),
      });
      const location = response.headers.get('location');
      if (response.status >= 300 && response.status < 400 && location !== null) {
        // A redirect leads to a download link that carries its own authority (a presigned S3
        // URL, or a signed local link): Ferry's credentials or signature are not sent there.
        await response.body?.cancel();
        response = await fetch(new URL(location, url));
      }
    } catch (error) {
      throw new Unreachable(
        `cannot reach Ferry at ${this.baseUrl} (${reasonOf(error)}); is \`ferry serve\` running?`,
      );
    }
    if (!response.ok) throw apiErrorOf(response.status, response.statusText, await response.text());
    return response;
  }

  async json<T>(
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<Reply<T>> {
    const response = await this.request(method, path, {
      ...(body === undefined ? {} : { body }),
      ...(headers === undefined ? {} : { headers }),
    });
    return { status: response.status, headers: response.headers, body: (await response.json()) as T };
  }

  /** A request answered with no body (204), such as a DELETE. */
  async empty(method: string, path: string): Promise<number> {
    const response = await this.request(method, path);
    await response.body?.cancel();
    return response.status;
  }

  async bytes(path: string): Promise<Reply<Buffer>> {
    const response = await this.request('GET', path);
    let body: Buffer;
    try {
      body = Buffer.from(await response.arrayBuffer());
    } catch (error) {
      // The server went away mid-reply: as unreachable as if it had not answered at all.
      throw new Unreachable(`the connection to Ferry at ${this.baseUrl} broke (${reasonOf(error)})`);
    }
    return { status: response.status, headers: response.headers, body };
  }
}
