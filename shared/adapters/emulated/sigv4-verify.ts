// Verifies AWS Signature Version 4 on a request the emulated deployment receives, as AWS
// does: the signature is computed again from the request with the secret of the access key it
// names and compared in constant time; a request signed too far from now, or a presigned link
// past its expiry, is refused. Both forms are read: the Authorization header and the query
// string of a presigned link.
import { createHash, timingSafeEqual } from 'node:crypto';
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';

export interface SignedRequest {
  readonly method: string;
  /** Path and query exactly as received. */
  readonly url: string;
  /** Header names in lower case. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

export interface SigningKey {
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

export interface Signature {
  readonly accessKeyId: string;
  readonly date: string;
  readonly region: string;
  readonly service: string;
  readonly signedHeaders: readonly string[];
  readonly signature: string;
  /** Seconds a presigned link stays valid; absent for a signed header. */
  readonly expiresSeconds?: number;
  readonly sessionToken?: string;
}

export type Verification =
  | { readonly ok: true; readonly signature: Signature }
  | { readonly ok: false; readonly code: string; readonly message: string };

const ALGORITHM = 'AWS4-HMAC-SHA256';
/** AWS refuses a signature dated more than 15 minutes from its clock. */
const MAX_SKEW_MS = 15 * 60 * 1000;
/** The query parameters a presigned link's signature is made of. */
export const PRESIGN_PARAMETERS: readonly string[] = [
  'X-Amz-Algorithm',
  'X-Amz-Credential',
  'X-Amz-Date',
  'X-Amz-Expires',
  'X-Amz-SignedHeaders',
  'X-Amz-Signature',
  'X-Amz-Security-Token',
];

/** The signature a request carries, read without checking it; undefined when it carries none. */
export function readSignature(request: SignedRequest): Signature | undefined {
  const header = request.headers.authorization;
  if (header?.startsWith(`${ALGORITHM} `)) {
    const fields = Object.fromEntries(
      header
        .slice(ALGORITHM.length + 1)
        .split(',')
        .map((part) => part.trim().split(/=(.*)/s) as [string, string]),
    );
    return signatureFrom(
      fields.Credential,
      request.headers['x-amz-date'],
      fields.SignedHeaders,
      fields.Signature,
      undefined,
      request.headers['x-amz-security-token'],
    );
  }
  const query = new URLSearchParams(queryOf(request.url));
  if (query.get('X-Amz-Algorithm') !== ALGORITHM) return undefined;
  const expires = query.get('X-Amz-Expires');
  return signatureFrom(
    query.get('X-Amz-Credential') ?? undefined,
    query.get('X-Amz-Date') ?? undefined,
    query.get('X-Amz-SignedHeaders') ?? undefined,
    query.get('X-Amz-Signature') ?? undefined,
    expires === null ? undefined : Number(expires),
    query.get('X-Amz-Security-Token') ?? undefined,
  );
}

function signatureFrom(
  credential: string | undefined,
  date: string | undefined,
  signedHeaders: string | undefined,
  signature: string | undefined,
  expiresSeconds: number | undefined,
  sessionToken: string | undefined,
): Signature | undefined {
  const [accessKeyId, , region, service] = (credential ?? '').split('/');
  if (!accessKeyId || !region || !service || !date || !signedHeaders || !signature) return undefined;
  return {
    accessKeyId,
    date,
    region,
    service,
    signedHeaders: signedHeaders.split(';'),
    signature,
    ...(expiresSeconds === undefined ? {} : { expiresSeconds }),
    ...(sessionToken === undefined ? {} : { sessionToken }),
  };
}

/** Checks the request's signature against `secretFor(accessKeyId)`. */
export async function verifySignature(
  request: SignedRequest,
  secretFor: (accessKeyId: string) => SigningKey | undefined,
  now: Date = new Date(),
): Promise<Verification> {
  const signature = readSignature(request);
  if (signature === undefined) {
    return {
      ok: false,
      code: 'MissingAuthenticationToken',
      message: 'the request carries no SigV4 signature',
    };
  }
  const key = secretFor(signature.accessKeyId);
  if (key === undefined) {
    return {
      ok: false,
      code: 'InvalidClientTokenId',
      message: `the security token included in the request is invalid: no access key ${signature.accessKeyId}`,
    };
  }
  if ((key.sessionToken ?? undefined) !== signature.sessionToken) {
    return {
      ok: false,
      code: 'InvalidClientTokenId',
      message: 'the session token does not match the access key',
    };
  }
  const signedAt = parseAmzDate(signature.date);
  if (signedAt === undefined) {
    return { ok: false, code: 'IncompleteSignature', message: `unreadable X-Amz-Date ${signature.date}` };
  }
  if (signature.expiresSeconds === undefined) {
    if (Math.abs(now.getTime() - signedAt.getTime()) > MAX_SKEW_MS) {
      return {
        ok: false,
        code: 'SignatureDoesNotMatch',
        message: `Signature expired: ${signature.date} is more than 15 minutes from the server's time`,
      };
    }
  } else if (now.getTime() > signedAt.getTime() + signature.expiresSeconds * 1000) {
    return { ok: false, code: 'AccessDenied', message: 'Request has expired' };
  }

  // A payload hash the client stated must be the body's: AWS checks it before the signature.
  const stated = request.headers['x-amz-content-sha256'];
  if (stated !== undefined && /^[0-9a-f]{64}$/.test(stated)) {
    const actual = createHash('sha256').update(request.body).digest('hex');
    if (actual !== stated) {
      return {
        ok: false,
        code: 'XAmzContentSHA256Mismatch',
        message: "The provided 'x-amz-content-sha256' header does not match what was computed.",
      };
    }
  }
  const expected = await computeSignature(request, signature, key, signedAt);
  const given = Buffer.from(signature.signature, 'utf8');
  const wanted = Buffer.from(expected, 'utf8');
  if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) {
    return {
      ok: false,
      code: 'SignatureDoesNotMatch',
      message:
        'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
    };
  }
  return { ok: true, signature };
}

async function computeSignature(
  request: SignedRequest,
  signature: Signature,
  key: SigningKey,
  signingDate: Date,
): Promise<string> {
  const s3 = signature.service === 's3';
  const signer = new SignatureV4({
    credentials: {
      accessKeyId: signature.accessKeyId,
      secretAccessKey: key.secretAccessKey,
      ...(key.sessionToken === undefined ? {} : { sessionToken: key.sessionToken }),
    },
    region: signature.region,
    service: signature.service,
    sha256: Sha256,
    // S3 signs the path as sent; every other service encodes it once more.
    uriEscapePath: !s3,
    applyChecksum: false,
  });
  const [path, rawQuery] = splitOnce(request.url, '?');
  const query: Record<string, string | string[]> = {};
  for (const [name, value] of new URLSearchParams(rawQuery)) {
    if (signature.expiresSeconds !== undefined && PRESIGN_PARAMETERS.includes(name)) continue;
    const existing = query[name];
    query[name] =
      existing === undefined ? value : [...(Array.isArray(existing) ? existing : [existing]), value];
  }
  const headers: Record<string, string> = {};
  for (const name of signature.signedHeaders) {
    const value = request.headers[name];
    if (value !== undefined) headers[name] = value;
  }
  const signable = new Set(signature.signedHeaders);
  const base = { method: request.method, protocol: 'http:', hostname: 'emulated', path, query, headers };

  if (signature.expiresSeconds !== undefined) {
    const presigned = await signer.presign(
      s3 ? { ...base, headers: { ...headers, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } } : base,
      {
        signingDate,
        expiresIn: signature.expiresSeconds,
        signableHeaders: signable,
        unsignableHeaders: new Set(['x-amz-content-sha256'].filter((name) => !signable.has(name))),
        unhoistableHeaders: new Set(Object.keys(headers).concat('x-amz-content-sha256')),
      },
    );
    return String(presigned.query?.['X-Amz-Signature'] ?? '');
  }
  const payloadHeader = request.headers['x-amz-content-sha256'];
  const signed = await signer.sign(
    {
      ...base,
      headers: payloadHeader === undefined ? headers : { ...headers, 'x-amz-content-sha256': payloadHeader },
      body: request.body,
    },
    { signingDate, signableHeaders: signable },
  );
  const authorization = String(signed.headers.authorization ?? signed.headers.Authorization ?? '');
  return /Signature=([0-9a-f]+)/.exec(authorization)?.[1] ?? '';
}

function parseAmzDate(text: string): Date | undefined {
  const match = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/.exec(text);
  if (match === null) return undefined;
  const [, y, mo, d, h, mi, s] = match;
  return new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)));
}

function queryOf(url: string): string {
  return splitOnce(url, '?')[1];
}

export function splitOnce(text: string, separator: string): [string, string] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, ''] : [text.slice(0, at), text.slice(at + 1)];
}
