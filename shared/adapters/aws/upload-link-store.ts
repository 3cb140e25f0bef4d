// The publisher's ResultSink on S3 without write permissions: it asks Ferry's API (signed with
// SigV4 as the task role, proving itself with the launch's upload secret) for short-lived
// presigned links to its own execution's keys, and sends the bytes to S3 over plain HTTP.
// A large body goes as a multipart upload with one part in memory at a time; transient failures
// are retried with backoff, and a link that ran out is asked for again.
import type { Readable } from 'node:stream';
import { Sha256 } from '@aws-crypto/sha256-js';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { SignatureV4 } from '@smithy/signature-v4';
import {
  type SignedUpload,
  UPLOAD_LINKS_PER_REQUEST,
  UPLOAD_SECRET_HEADER,
  type UploadLinkRequest,
  type UploadLinks,
} from '../../domain/upload-links.ts';
import type { Logger } from '../../logger.ts';
import type { ResultSink } from '../../ports.ts';

/** S3's smallest part but the last. */
const MIN_PART_BYTES = 5 * 1024 * 1024;
/** A link closer than this to its expiry is asked for again rather than used. */
const EXPIRY_MARGIN_MS = 15_000;
/** Part links asked for at once, so a long stream makes few calls to the API. */
const PART_LINKS_AHEAD = 4;
/** The longest a call to the API, or one request to S3, may take before it counts as failed. */
const API_TIMEOUT_MS = 30_000;
const S3_TIMEOUT_MS = 300_000;

export interface UploadCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
  readonly expiration?: Date;
}

export interface UploadLinkStoreOptions {
  /** Ferry's API (the stage URL). */
  readonly apiUrl: string;
  readonly executionId: string;
  readonly uploadSecret: string;
  /** The API's region, for SigV4. */
  readonly region: string;
  /** What requests to the API are signed with; by default the standard chain (the task role in ECS). */
  readonly credentials?: UploadCredentials | (() => Promise<UploadCredentials>);
  /** Bytes per part of a multipart upload: the most of a body held in memory. @default 8 MiB */
  readonly partSize?: number;
  /** Tries of each request before giving up on transient failures. @default 6 */
  readonly attempts?: number;
  readonly fetch?: typeof fetch;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly log?: Logger;
}

type Link = SignedUpload & { readonly expiresAtMs: number };

/** A failure another try may get past: the network, throttling, a 5xx. */
class Transient extends Error {}

/** A link S3 refused because it ran out: ask for a new one. */
class Expired extends Error {}

export class UploadLinkStore implements ResultSink {
  private readonly signer: SignatureV4;
  private readonly endpoint: URL;
  private readonly partSize: number;
  private readonly attempts: number;
  private readonly fetch: typeof fetch;
  private readonly sleep: (ms: number) => Promise<void>;
  /** PUT links asked for ahead (expect), by key; each is used once. */
  private readonly ready = new Map<string, Link>();

  constructor(private readonly options: UploadLinkStoreOptions) {
    this.signer = new SignatureV4({
      service: 'execute-api',
      region: options.region,
      credentials: options.credentials ?? defaultProvider(),
      sha256: Sha256,
      applyChecksum: false,
    });
    this.endpoint = new URL(
      `${options.apiUrl.replace(/\/+$/, '')}/v1/executions/${options.executionId}/uploads`,
    );
    this.partSize = options.partSize ?? 8 * 1024 * 1024;
    if (this.partSize < MIN_PART_BYTES) {
      throw new Error(`partSize must be at least ${MIN_PART_BYTES} bytes (S3's smallest part)`);
    }
    this.attempts = options.attempts ?? 6;
    this.fetch = options.fetch ?? fetch;
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  async put(
    key: string,
    body: Buffer | string | Readable,
    contentType = 'application/octet-stream',
  ): Promise<void> {
    const parts =
      typeof body === 'string' || Buffer.isBuffer(body)
        ? slices(typeof body === 'string' ? Buffer.from(body) : body, this.partSize)
        : chunks(body, this.partSize);
    const first = await parts.next();
    const second = first.done ? first : await parts.next();
    if (second.done) {
      // One part or none: a single PUT.
      const bytes = first.done ? Buffer.alloc(0) : first.value;
      await this.send({ action: 'put', key, contentType }, bytes);
      return;
    }
    // Too large for the one PUT a link may have been asked for ahead.
    this.ready.delete(key);
    try {
      await this.multipart(key, contentType, [first.value, second.value], parts);
    } catch (error) {
      // Let go of the body: a stream still being read is destroyed.
      await parts.return(undefined);
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    await this.send({ action: 'delete', key });
  }

  /** Asks for PUT links to all of `keys` in as few requests as may be; `put` then uses them. */
  async expect(keys: readonly string[]): Promise<void> {
    for (let at = 0; at < keys.length; at += UPLOAD_LINKS_PER_REQUEST) {
      const requests = keys
        .slice(at, at + UPLOAD_LINKS_PER_REQUEST)
        .map((key) => ({ action: 'put' as const, key, contentType: 'application/octet-stream' }));
      for (const link of await this.ask(requests)) this.ready.set(link.key, link);
    }
  }

  private async multipart(
    key: string,
    contentType: string,
    head: Buffer[],
    rest: AsyncIterator<Buffer>,
  ): Promise<void> {
    const created = await this.send({ action: 'createMultipart', key, contentType });
    const uploadId = xmlField(created, 'UploadId');
    if (uploadId === undefined) throw new Error(`S3 started no multipart upload for ${key}: ${created}`);
    try {
      const etags: string[] = [];
      let links: Link[] = [];
      const upload = async (part: Buffer) => {
        const partNumber = etags.length + 1;
        if (!links.some((l) => l.partNumber === partNumber && fresh(l))) {
          const wanted = Array.from({ length: PART_LINKS_AHEAD }, (_, i) => ({
            action: 'uploadPart' as const,
            key,
            uploadId,
            partNumber: partNumber + i,
          }));
          links = await this.ask(wanted);
        }
        etags.push(
          await this.use({ action: 'uploadPart', key, uploadId, partNumber }, part, links, (response) => {
            const etag = response.headers.get('etag');
            if (etag === null) throw new Transient(`S3 gave part ${partNumber} of ${key} no ETag`);
            return etag;
          }),
        );
      };
      for (const part of head) await upload(part);
      for (let next = await rest.next(); !next.done; next = await rest.next()) await upload(next.value);
      const list = etags
        .map((etag, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${escapeXml(etag)}</ETag></Part>`)
        .join('');
      const completed = await this.send(
        { action: 'completeMultipart', key, uploadId },
        Buffer.from(`<CompleteMultipartUpload>${list}</CompleteMultipartUpload>`),
      );
      // S3 may answer 200 and still fail: the error is in the body.
      if (!completed.includes('CompleteMultipartUploadResult')) {
        throw new Error(`S3 did not complete the upload of ${key}: ${completed.slice(0, 300)}`);
      }
    } catch (error) {
      await this.send({ action: 'abortMultipart', key, uploadId }).catch((abortError: unknown) =>
        this.options.log?.warn('could not abort a multipart upload; the bucket lifecycle will', {
          key,
          error: abortError,
        }),
      );
      throw error;
    }
  }

  /** Asks for a link to `request` and does it with `body`; resolves with S3's answer. */
  private async send(request: UploadLinkRequest, body?: Buffer): Promise<string> {
    return this.use(request, body, [], (response) => response.text());
  }

  /**
   * Does `request` through a link from `links` (or a new one), retrying transient failures and
   * asking again for a link that expired; `read` takes what is needed from S3's answer.
   */
  private async use<T>(
    request: UploadLinkRequest,
    body: Buffer | undefined,
    links: readonly Link[],
    read: (response: Response) => Promise<T> | T,
  ): Promise<T> {
    let link = links.find((l) => sameRequest(l, request) && fresh(l)) ?? this.takeReady(request);
    for (let attempt = 1; ; attempt++) {
      try {
        if (link === undefined || !fresh(link)) [link] = await this.ask([request]);
        if (link === undefined) throw new Error(`Ferry signed no link for ${request.action} ${request.key}`);
        return await read(await this.call(link, body));
      } catch (error) {
        if (error instanceof Expired) link = undefined;
        else if (!(error instanceof Transient)) throw error;
        if (attempt >= this.attempts) throw error;
        this.options.log?.warn('an upload failed; trying again', {
          action: request.action,
          key: request.key,
          attempt,
          error,
        });
        await this.sleep(backoff(attempt));
      }
    }
  }

  /** A link asked for ahead that does `request`, if there is a fresh one. */
  private takeReady(request: UploadLinkRequest): Link | undefined {
    const link = this.ready.get(request.key);
    if (link === undefined) return undefined;
    this.ready.delete(request.key);
    const same = request.action === 'put' && link.contentType === request.contentType;
    return same && fresh(link) ? link : undefined;
  }

  /** Sends one request through a signed link. */
  private async call(link: Link, body: Buffer | undefined): Promise<Response> {
    let response: Response;
    try {
      response = await this.fetch(link.url, {
        method: link.method,
        headers: link.headers,
        signal: AbortSignal.timeout(S3_TIMEOUT_MS),
        ...(body === undefined ? {} : { body }),
      });
    } catch (error) {
      throw new Transient(`S3 could not be reached: ${(error as Error).message}`, { cause: error });
    }
    if (response.ok || (link.action === 'delete' && response.status === 404)) return response;
    const text = await response.text();
    const code = xmlField(text, 'Code') ?? String(response.status);
    const message = `S3 refused ${link.action} ${link.key}: ${code}: ${xmlField(text, 'Message') ?? text.slice(0, 200)}`;
    if (response.status === 403 && /expired/i.test(text)) throw new Expired(message);
    if (response.status >= 500 || response.status === 429 || code === 'SlowDown')
      throw new Transient(message);
    throw new Error(message);
  }

  /** Asks Ferry's API for links; transient failures are retried here, refusals are not. */
  private async ask(requests: readonly UploadLinkRequest[]): Promise<Link[]> {
    const body = JSON.stringify({ links: requests.slice(0, UPLOAD_LINKS_PER_REQUEST) });
    for (let attempt = 1; ; attempt++) {
      let response: Response | undefined;
      let failure: string;
      try {
        const signed = await this.signer.sign({
          method: 'POST',
          protocol: this.endpoint.protocol,
          hostname: this.endpoint.hostname,
          ...(this.endpoint.port === '' ? {} : { port: Number(this.endpoint.port) }),
          path: this.endpoint.pathname,
          headers: {
            host: this.endpoint.host,
            'content-type': 'application/json',
            [UPLOAD_SECRET_HEADER]: this.options.uploadSecret,
          },
          body,
        });
        const { host: _host, ...headers } = signed.headers;
        response = await this.fetch(this.endpoint, {
          method: 'POST',
          headers,
          body,
          signal: AbortSignal.timeout(API_TIMEOUT_MS),
        });
        if (response.ok) {
          const answer = (await response.json()) as UploadLinks;
          const expiresAtMs = Date.parse(answer.expiresAt);
          return answer.links.map((link) => ({ ...link, expiresAtMs }));
        }
        const problem = (await response.json().catch(() => ({}))) as { detail?: string; message?: string };
        failure = `Ferry answered ${response.status} to a request for upload links: ${problem.detail ?? problem.message ?? ''}`;
      } catch (error) {
        failure = `Ferry's API could not be reached: ${(error as Error).message}`;
      }
      const transient = response === undefined || response.status >= 500 || response.status === 429;
      if (!transient || attempt >= this.attempts) throw new Error(failure);
      this.options.log?.warn('asking for upload links failed; trying again', { attempt, reason: failure });
      await this.sleep(backoff(attempt));
    }
  }
}

const fresh = (link: Link): boolean => link.expiresAtMs - Date.now() > EXPIRY_MARGIN_MS;

const sameRequest = (link: Link, request: UploadLinkRequest): boolean =>
  link.action === request.action &&
  link.key === request.key &&
  (request.action !== 'uploadPart' || link.partNumber === request.partNumber);

/** A Buffer as parts, without copying. */
async function* slices(bytes: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

/** A stream as parts of `size` bytes (the last one shorter), holding at most one part. */
async function* chunks(stream: Readable, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let held = 0;
  for await (const chunk of stream) {
    let bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    while (held + bytes.length >= size) {
      const take = size - held;
      yield Buffer.concat([...pending, bytes.subarray(0, take)]);
      bytes = bytes.subarray(take);
      pending = [];
      held = 0;
    }
    if (bytes.length > 0) {
      pending.push(bytes);
      held += bytes.length;
    }
  }
  if (held > 0) yield Buffer.concat(pending);
}

/** The text of the first `<name>` element of an S3 XML answer. */
function xmlField(xml: string, name: string): string | undefined {
  const match = new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml);
  return match?.[1]
    ?.replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

const escapeXml = (text: string): string =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function backoff(attempt: number): number {
  const base = Math.min(5000, 200 * 2 ** attempt);
  return base / 2 + Math.random() * (base / 2);
}
