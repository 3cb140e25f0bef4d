// The gateway's second signature: whatever the caller signed with, the emulator behind it sees
// a request signed by the emulated account's key that AWS's own check accepts.
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import { describe, expect, it } from 'vitest';
import { resign } from '../../shared/adapters/emulated/resign.ts';
import { verifySignature } from '../../shared/adapters/emulated/sigv4-verify.ts';

const CALLER = { accessKeyId: 'ASIACALLER', secretAccessKey: 'caller-secret', sessionToken: 'session' };
const EMULATOR = { accessKeyId: '123456789012', secretAccessKey: 'test' };
const target = { host: '127.0.0.1:4566', service: 's3', region: 'us-east-1', key: EMULATOR };

const secretFor = (id: string) => (id === EMULATOR.accessKeyId ? { secretAccessKey: 'test' } : undefined);

function signer(service: string) {
  return new SignatureV4({
    credentials: CALLER,
    region: 'us-east-1',
    service,
    sha256: Sha256,
    uriEscapePath: service !== 's3',
  });
}

describe('resign', () => {
  it('replaces a caller’s header signature with the emulator’s, keeping the query and body', async () => {
    const body = Buffer.from('{"QueueUrl":"http://gw/123456789012/q"}');
    const signed = await signer('sqs').sign({
      method: 'POST',
      protocol: 'http:',
      hostname: 'gateway:1',
      path: '/',
      query: {},
      headers: {
        host: 'gateway:1',
        'content-type': 'application/x-amz-json-1.0',
        'x-amz-target': 'AmazonSQS.SendMessage',
      },
      body,
    });
    const request = {
      method: 'POST',
      url: '/',
      headers: Object.fromEntries(
        Object.entries(signed.headers).map(([k, v]) => [k.toLowerCase(), String(v)]),
      ),
      body,
    };
    const out = await resign(request, { ...target, service: 'sqs' });
    expect(out.headers['x-amz-security-token']).toBeUndefined();
    expect(out.headers.host).toBe('127.0.0.1:4566');
    expect(out.headers['x-amz-target']).toBe('AmazonSQS.SendMessage');
    expect(out.body.equals(body)).toBe(true);
    const verdict = await verifySignature(out, secretFor);
    expect(verdict).toMatchObject({ ok: true, signature: { accessKeyId: '123456789012', service: 'sqs' } });
    // The caller's own key no longer opens it.
    expect((await verifySignature(out, () => ({ secretAccessKey: 'caller-secret' }))).ok).toBe(false);
  });

  it('turns a presigned link into a signed request, keeping the parameters that are not the signature', async () => {
    const presigned = await signer('s3').presign(
      {
        method: 'PUT',
        protocol: 'http:',
        hostname: 'gateway:1',
        path: '/bucket/executions/ex_1/stdout',
        query: { partNumber: '2', uploadId: 'a b/c', 'x-amz-checksum-crc32': 'AAAAAA==' },
        headers: { host: 'gateway:1' },
      },
      { expiresIn: 300 },
    );
    const query = new URLSearchParams(presigned.query as Record<string, string>).toString();
    const out = await resign(
      {
        method: 'PUT',
        url: `/bucket/executions/ex_1/stdout?${query}`,
        headers: { host: 'gateway:1' },
        body: Buffer.from('part'),
      },
      target,
    );
    const kept = new URLSearchParams(out.url.split('?')[1]);
    expect([...kept.keys()].sort()).toEqual(['partNumber', 'uploadId', 'x-amz-checksum-crc32']);
    expect(kept.get('uploadId')).toBe('a b/c');
    expect(out.headers['x-amz-content-sha256']).toBe('UNSIGNED-PAYLOAD');
    expect((await verifySignature(out, secretFor)).ok).toBe(true);
  });

  it('passes an aws-chunked body on whole, its trailing checksum as a header', async () => {
    const chunked = Buffer.from(
      '5;chunk-signature=aaaa\r\nhello\r\n6;chunk-signature=bbbb\r\n world\r\n0;chunk-signature=cccc\r\n' +
        'x-amz-checksum-crc32:DUoRhQ==\r\nx-amz-trailer-signature:dddd\r\n\r\n',
    );
    const out = await resign(
      {
        method: 'PUT',
        url: '/bucket/key',
        headers: {
          host: 'gateway:1',
          authorization:
            'AWS4-HMAC-SHA256 Credential=ASIACALLER/20261204/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00',
          'content-encoding': 'aws-chunked',
          'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER',
          'x-amz-decoded-content-length': '11',
          'x-amz-trailer': 'x-amz-checksum-crc32',
        },
        body: chunked,
      },
      target,
    );
    expect(out.body.toString()).toBe('hello world');
    expect(out.headers['content-length']).toBe('11');
    expect(out.headers['x-amz-checksum-crc32']).toBe('DUoRhQ==');
    expect(out.headers['content-encoding']).toBeUndefined();
    expect(out.headers['x-amz-trailer']).toBeUndefined();
    expect(out.headers['x-amz-trailer-signature']).toBeUndefined();
    expect((await verifySignature(out, secretFor)).ok).toBe(true);
  });
});
