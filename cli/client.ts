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
    let headers: Record<string, string> = { ...init.headers };
    // A signed request carries its identity in the signature; a bearer token would replace it.
    if (this.token !== undefined && this.signer === undefined) headers.authorization = `Bearer ${this.token}`;
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    // API Gateway's stage URL ends in a slash; the paths here begin with one.
    const url = `${this.baseUrl.replace(/\/+$/, '')}${path}`;
    const body = init.body === undefined ? undefined : JSON.stringify(init.body);
    if (this.signer !== undefined) {
      headers = await this.signer.sign({
        method,
        url: new URL(url),
        headers,
        ...(body === undefined ? {} : { body }),
      });
    }
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
        `cannot reach Ferry at ${this.baseUrl} (${(error as Error & { cause?: Error }).cause?.message ?? (error as Error).message}); is \`ferry serve\` running?`,
      );
    }
    if (!response.ok) {
      const text = await response.text();
      let problem: ApiError['problem'];
      try {
        problem = JSON.parse(text) as ApiError['problem'];
      } catch {
        problem = { detail: text || response.statusText };
      }
      throw new ApiError(response.status, problem);
    }
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
      throw new Unreachable(
        `the connection to Ferry at ${this.baseUrl} broke (${(error as Error & { cause?: Error }).cause?.message ?? (error as Error).message})`,
      );
    }
    return { status: response.status, headers: response.headers, body };
  }
}
