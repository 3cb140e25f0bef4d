// Ferry's public API as the dashboard calls it: same origin, the bearer token when the caller
// gave one (kept for the browser session only), and problem details turned into errors that
// say what Ferry said.
import type { Execution } from '../../shared/domain/execution.ts';

const TOKEN_KEY = 'ferry.token';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** Field-level problems, when Ferry named them. */
    readonly problems: readonly { field: string; message: string }[] = [],
  ) {
    super(message);
  }
}

export const token = {
  get: (): string | undefined => sessionStorage.getItem(TOKEN_KEY) ?? undefined,
  set: (value: string) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** Called when Ferry refuses the token (or wants one): the app asks for it again. */
let onUnauthorized: (error: ApiError) => void = () => undefined;
export const whenUnauthorized = (handler: (error: ApiError) => void) => {
  onUnauthorized = handler;
};

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const bearer = token.get();
  return { ...extra, ...(bearer === undefined ? {} : { authorization: `Bearer ${bearer}` }) };
}

async function failure(response: Response): Promise<ApiError> {
  let detail = `${response.status} ${response.statusText}`;
  let problems: { field: string; message: string }[] = [];
  try {
    const body = (await response.json()) as {
      title?: string;
      detail?: string;
      errors?: { field: string; message: string }[];
    };
    detail = body.detail ?? body.title ?? detail;
    problems = body.errors ?? [];
  } catch {
    // Not a problem document: the status says what there is to say.
  }
  const error = new ApiError(response.status, detail, problems);
  if (response.status === 401) onUnauthorized(error);
  return error;
}

export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  const response = await fetch(path, {
    ...init,
    headers: headers((init.headers as Record<string, string> | undefined) ?? {}),
  });
  if (!response.ok && response.status !== 303) throw await failure(response);
  return response;
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  return (await (await request(path, signal === undefined ? {} : { signal })).json()) as T;
}

export async function postJson<T>(path: string, body?: unknown): Promise<T> {
  const response = await request(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': crypto.randomUUID() },
    body: JSON.stringify(body ?? {}),
  });
  return (await response.json()) as T;
}

export interface ExecutionPage {
  readonly items: readonly Execution[];
  readonly nextCursor?: string;
}

export interface StateCounts {
  readonly counts: Readonly<Record<string, number>>;
  /** States whose count stopped at the store's cap. */
  readonly atLeast: readonly string[];
}

/** One read of a stream from a position: the bytes, and where to go on. */
export interface LogChunk {
  readonly bytes: Uint8Array;
  readonly nextOffset: number;
  readonly skippedBytes: number;
  readonly complete: boolean;
  readonly state: string | undefined;
}

export async function readLog(
  id: string,
  stream: 'stdout' | 'stderr',
  offset: number,
  options: { follow?: boolean; maxBytes?: number; signal?: AbortSignal } = {},
): Promise<LogChunk> {
  const query = new URLSearchParams({ stream, offset: String(offset) });
  if (options.follow) {
    query.set('follow', 'true');
    query.set('waitSeconds', '20');
  }
  if (options.maxBytes !== undefined) query.set('maxBytes', String(options.maxBytes));
  const response = await request(
    `/v1/executions/${encodeURIComponent(id)}/logs?${query}`,
    options.signal === undefined ? {} : { signal: options.signal },
  );
  const bytes = new Uint8Array(await response.arrayBuffer());
  const number = (name: string, fallback: number) => {
    const value = response.headers.get(name);
    return value === null ? fallback : Number(value);
  };
  return {
    bytes,
    nextOffset: number('ferry-next-offset', offset + bytes.length),
    skippedBytes: number('ferry-skipped-bytes', 0),
    complete: response.headers.get('ferry-complete') === 'true',
    state: response.headers.get('ferry-state') ?? undefined,
  };
}
