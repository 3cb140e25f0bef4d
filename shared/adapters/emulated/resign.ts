// Signs a request again, with the emulator's own key, before the gateway passes it on. The
// gateway checks each caller's signature and IAM policies itself; the emulator behind it
// must then see one account whoever called: LocalStack reads the account from the access key
// (a twelve-digit key is that account) and checks S3 signatures, moto reads neither. A
// presigned link becomes a request signed in its headers, and a body S3 received in
// aws-chunked encoding is passed on whole, its trailing checksum as a header.
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import { PRESIGN_PARAMETERS, splitOnce } from './sigv4-verify.ts';

export interface OutgoingRequest {
  readonly method: string;
  /** Path and query, encoded. */
  readonly url: string;
  /** Header names in lower case. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

export interface EmulatorKey {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/** What the caller's signature put in the request, in headers or in a presigned link's query. */
const SIGNATURE_HEADERS = ['authorization', 'x-amz-date', 'x-amz-security-token', 'x-amz-content-sha256'];
const SIGNATURE_QUERY = new Set(PRESIGN_PARAMETERS);
/** Sent by the HTTP client itself, so never part of the signature. */
const TRANSPORT_HEADERS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'expect']);

export async function resign(
  request: OutgoingRequest,
  target: {
    readonly host: string;
    readonly service: string;
    readonly region: string;
    readonly key: EmulatorKey;
  },
): Promise<OutgoingRequest> {
  const [path, rawQuery] = splitOnce(request.url, '?');
  const query: Record<string, string | string[]> = {};
  const kept: [string, string][] = [];
  for (const [name, value] of new URLSearchParams(rawQuery)) {
    if (SIGNATURE_QUERY.has(name)) continue;
    kept.push([name, value]);
    const existing = query[name];
    query[name] =
      existing === undefined ? value : [...(Array.isArray(existing) ? existing : [existing]), value];
  }

  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    if (!SIGNATURE_HEADERS.includes(name) && !TRANSPORT_HEADERS.has(name)) headers[name] = value;
  }
  let body = request.body;
  if (isAwsChunked(request.headers)) {
    const decoded = decodeAwsChunked(request.body);
    body = decoded.body;
    Object.assign(headers, decoded.trailers);
    delete headers['x-amz-trailer'];
    delete headers['x-amz-decoded-content-length'];
    const encodings = (headers['content-encoding'] ?? '')
      .split(',')
      .map((e) => e.trim())
      .filter((e) => e !== '' && e !== 'aws-chunked');
    if (encodings.length === 0) delete headers['content-encoding'];
    else headers['content-encoding'] = encodings.join(',');
  }
  headers.host = target.host;
  headers['content-length'] = String(body.length);
  const s3 = target.service === 's3';
  // S3 takes an unsigned payload, which spares hashing every uploaded part once more.
  if (s3) headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';

  const signer = new SignatureV4({
    credentials: target.key,
    region: target.region,
    service: target.service,
    sha256: Sha256,
    uriEscapePath: !s3,
    applyChecksum: false,
  });
  const signed = await signer.sign({
    method: request.method,
    protocol: 'http:',
    hostname: target.host,
    path,
    query,
    headers,
    body,
  });
  const search = kept.map(([name, value]) => `${uriEncode(name)}=${uriEncode(value)}`).join('&');
  return {
    method: request.method,
    url: search === '' ? path : `${path}?${search}`,
    headers: signed.headers as Record<string, string>,
    body,
  };
}

function isAwsChunked(headers: Readonly<Record<string, string>>): boolean {
  return (
    (headers['content-encoding'] ?? '').split(',').some((e) => e.trim() === 'aws-chunked') ||
    (headers['x-amz-content-sha256'] ?? '').startsWith('STREAMING-')
  );
}

/** `size[;chunk-signature=…]\r\n data \r\n` … `0\r\n`, then trailer lines, then `\r\n`. */
function decodeAwsChunked(encoded: Buffer): { body: Buffer; trailers: Record<string, string> } {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const lineEnd = encoded.indexOf('\r\n', at);
    if (lineEnd < 0) throw new Error('an aws-chunked body ends inside a chunk header');
    const size = Number.parseInt(encoded.subarray(at, lineEnd).toString('latin1').split(';')[0] ?? '', 16);
    if (!Number.isFinite(size)) throw new Error('an aws-chunked body has an unreadable chunk size');
    at = lineEnd + 2;
    if (size === 0) break;
    parts.push(encoded.subarray(at, at + size));
    at += size + 2;
  }
  const trailers: Record<string, string> = {};
  for (const line of encoded.subarray(at).toString('latin1').split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    // The trailer's own signature was the caller's; the request is signed again without it.
    if (name !== 'x-amz-trailer-signature') trailers[name] = line.slice(colon + 1).trim();
  }
  return { body: Buffer.concat(parts), trailers };
}

/** RFC 3986 encoding, as SigV4 canonicalises a query. */
function uriEncode(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}
