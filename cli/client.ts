// A small client for Ferry's HTTP API, used by the CLI (and by tests and the benchmark).

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: { title?: string; detail?: string; [key: string]: unknown },
  ) {
    super(problem.detail ?? problem.title ?? `HTTP ${status}`);
  }
}

export class Unreachable extends Error {}

export interface Reply<T> {
  readonly status: number;
  readonly headers: Headers;
  readonly body: T;
}

export class FerryClient {
  constructor(
    readonly baseUrl: string,
    private readonly token?: string,
  ) {}

  private async request(
    method: string,
    path: string,
    init: { body?: unknown; headers?: Record<string, string> } = {},
  ) {
    const headers: Record<string, string> = { ...init.headers };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
      });
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

  async bytes(path: string): Promise<Reply<Buffer>> {
    const response = await this.request('GET', path);
    return {
      status: response.status,
      headers: response.headers,
      body: Buffer.from(await response.arrayBuffer()),
    };
  }
}
