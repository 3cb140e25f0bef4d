// Upload links: how the publisher of a Fargate task stores its execution's result without any
// write permission of its own. Each launch attempt gets a random upload secret that only its
// publisher container is given; Ferry keeps the secret's digest, and signs short-lived links
// for that execution's result keys to whoever shows the secret. This module owns the secret,
// the requests a publisher may make and which keys each may name.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import type { Execution } from './execution.ts';
import { parseBody } from './job-spec.ts';

/** The request header that carries the secret (on AWS the Authorization header holds SigV4). */
export const UPLOAD_SECRET_HEADER = 'ferry-upload-secret';

const SECRET_BYTES = 32;
/** Unpadded base64url of 32 random bytes: always 43 characters. */
export const UPLOAD_SECRET_LENGTH = 43;
export const UPLOAD_SECRET_PATTERN = /^[A-Za-z0-9_-]{43}$/;
/** As long as any secret Ferry mints: a bid measures the overrides with it before one exists. */
export const LONGEST_UPLOAD_SECRET = 'x'.repeat(UPLOAD_SECRET_LENGTH);

/** How long a signed link stays usable; the publisher asks again for one that ran out. */
export const UPLOAD_LINK_SECONDS = 300;
/**
 * A run ends only once its task has stopped, so its publisher is done by then; links are still
 * handed out this long after the end (never later), so that nothing turns on the order in which
 * a task's last request and its stop event arrive.
 */
export const UPLOAD_GRACE_AFTER_END_SECONDS = 120;
/** The most links one request may ask for. */
export const UPLOAD_LINKS_PER_REQUEST = 32;

export function mintUploadSecret(): string {
  return randomBytes(SECRET_BYTES).toString('base64url');
}

/** What Ferry stores instead of the secret. */
export const uploadSecretDigest = (secret: string): string =>
  createHash('sha256').update(secret, 'utf8').digest('hex');

/**
 * Whether `secret` is the secret of one of the execution's launch attempts. Digests are
 * compared in constant time, and all of them, so the time taken says nothing about which matched.
 */
export function holdsUploadSecret(execution: Execution, secret: string): boolean {
  const presented = createHash('sha256').update(secret, 'utf8').digest();
  let found = false;
  for (const launch of execution.launches ?? []) {
    const stored = Buffer.from(launch.uploadSecretDigest, 'hex');
    if (stored.length === presented.length && timingSafeEqual(stored, presented)) found = true;
  }
  return found;
}

const key = z.string().min(1).max(1024);
const uploadId = z.string().min(1).max(1024);
/** A bare media type (no parameters): it travels as a signed header, so nothing that could smuggle another. */
const contentType = z
  .string()
  .max(255)
  .regex(/^[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+$/, 'a media type such as application/json')
  .default('application/octet-stream');

export const UploadLinkRequestSchema = z.discriminatedUnion('action', [
  z
    .strictObject({ action: z.literal('put'), key, contentType })
    .describe('PutObject: store a whole object in one PUT'),
  z
    .strictObject({ action: z.literal('createMultipart'), key, contentType })
    .describe('CreateMultipartUpload: POST, answered with the UploadId'),
  z
    .strictObject({
      action: z.literal('uploadPart'),
      key,
      uploadId,
      partNumber: z.number().int().min(1).max(10_000),
    })
    .describe('UploadPart: PUT one part, answered with its ETag'),
  z
    .strictObject({ action: z.literal('completeMultipart'), key, uploadId })
    .describe('CompleteMultipartUpload: POST the part list'),
  z
    .strictObject({ action: z.literal('abortMultipart'), key, uploadId })
    .describe('AbortMultipartUpload: DELETE'),
  z
    .strictObject({ action: z.literal('delete'), key })
    .describe('DeleteObject: DELETE (the live windows only)'),
]);

export type UploadLinkRequest = z.output<typeof UploadLinkRequestSchema>;
export type UploadAction = UploadLinkRequest['action'];

export const UploadLinksBodySchema = z
  .strictObject({
    links: z
      .array(UploadLinkRequestSchema)
      .min(1)
      .max(UPLOAD_LINKS_PER_REQUEST)
      .describe('the operations to sign, each on a key of this execution'),
  })
  .describe("what a task's publisher asks Ferry to sign");

export type UploadLinksBody = z.output<typeof UploadLinksBodySchema>;

export function parseUploadLinksBody(input: unknown): UploadLinksBody {
  return parseBody(UploadLinksBodySchema, input);
}

/** A signed request: send it as is (with these headers) and the store does the one thing it names. */
export interface SignedLink {
  readonly method: 'PUT' | 'POST' | 'DELETE';
  readonly url: string;
  /** Headers the link was signed with; the request must carry them unchanged. */
  readonly headers: Readonly<Record<string, string>>;
}

/** A signed link with the request it does. */
export interface SignedUpload extends SignedLink {
  readonly action: UploadAction;
  readonly key: string;
  readonly contentType?: string;
  readonly uploadId?: string;
  readonly partNumber?: number;
}

export interface UploadLinks {
  readonly executionId: string;
  /** In the order asked for. */
  readonly links: readonly SignedUpload[];
  /** When every link of the answer stops working. */
  readonly expiresAt: string;
}

/**
 * Why `request` may not be signed for `execution`, or undefined when it may: the publisher
 * writes only its own execution's streams, live windows, manifest and declared outputs, and
 * deletes only its live windows.
 */
export function uploadRefusal(execution: Execution, request: UploadLinkRequest): string | undefined {
  const prefix = `executions/${execution.id}/`;
  if (!request.key.startsWith(prefix)) return `not a key of execution ${execution.id} (under ${prefix})`;
  const name = request.key.slice(prefix.length);
  const live = name === 'live/stdout' || name === 'live/stderr';
  if (request.action === 'delete') {
    return live ? undefined : 'only the live windows (live/stdout, live/stderr) may be deleted';
  }
  const { outputs } = execution.spec;
  // A FILE output is one object; a DIRECTORY output's files are the objects below its name.
  const declared = outputs.some((output) =>
    output.type === 'FILE'
      ? name === `outputs/${output.name}`
      : name.startsWith(`outputs/${output.name}/`) && name.length > `outputs/${output.name}/`.length,
  );
  const writable = live || ['stdout', 'stderr', 'result.json'].includes(name) || declared;
  const listed = outputs.map((o) => `outputs/${o.name}${o.type === 'DIRECTORY' ? '/…' : ''}`);
  return writable
    ? undefined
    : `not a key the publisher writes: stdout, stderr, result.json, live/stdout, live/stderr${listed.length > 0 ? `, ${listed.join(', ')}` : ''}`;
}
