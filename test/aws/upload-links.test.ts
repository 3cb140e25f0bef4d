// The publisher's store without write permissions, against the emulator: the execution is
// launched by the dispatcher on ECS, the upload secret is read back from the publisher's
// RunTask overrides, and the store asks the real api handler (behind the emulated HTTP API:
// SigV4 verified, execute-api:Invoke decided on the task role's grant) for presigned links,
// which it uses with plain HTTP on S3. The emulator's S3 checks neither a presigned link's
// signature nor its expiry, so a front like S3's own does both before passing a request on.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { GetObjectCommand, ListMultipartUploadsCommand, NoSuchKey } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UploadLinkStore } from '../../shared/adapters/aws/upload-link-store.ts';
import type { EmulatedHttpApi } from '../../shared/adapters/emulated/http-api.ts';
import { verifySignature } from '../../shared/adapters/emulated/sigv4-verify.ts';
import type { Core } from '../../shared/core.ts';
import { silentLogger } from '../../shared/logger.ts';
import { buildAwsCore } from '../../shared/runtime/aws.ts';
import { serveApi, TASK_KEY } from '../support/api-front.ts';
import {
  type AwsEnvironment,
  awsConfig,
  createAwsEnvironment,
  endpointFor,
  launchOnEcs,
  REGION,
} from '../support/aws.ts';

const PART = 5 * 1024 * 1024;

interface S3Call {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
}

/**
 * Passes requests to the emulator's S3 as S3 itself would take them: a presigned link must be
 * signed by the key it names, for the headers sent, and not expired; a checksum it carries must
 * be the body's. `fault` may answer a request first (what S3 does that the emulator cannot).
 */
function s3Like(endpoint: string, calls: S3Call[], fault?: (call: S3Call) => Response | undefined) {
  const origin = new URL(endpoint).origin;
  return async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.origin !== origin) return fetch(input, init);
    const call = { method: init.method ?? 'GET', path: url.pathname, query: url.searchParams };
    calls.push(call);
    const body =
      init.body === undefined || init.body === null ? Buffer.alloc(0) : Buffer.from(init.body as Buffer);
    const headers: Record<string, string> = { host: url.host };
    for (const [name, value] of Object.entries((init.headers ?? {}) as Record<string, string>)) {
      headers[name.toLowerCase()] = value;
    }
    const refuse = (status: number, code: string, message: string) =>
      new Response(`<Error><Code>${code}</Code><Message>${message}</Message></Error>`, { status });
    const verdict = await verifySignature(
      { method: call.method, url: `${url.pathname}${url.search}`, headers, body },
      (id) => (id === 'test' ? { secretAccessKey: 'test' } : undefined),
    );
    if (!verdict.ok) return refuse(403, verdict.code, verdict.message);
    const crc = url.searchParams.get('x-amz-checksum-crc32');
    if (crc !== null) {
      const actual = Buffer.alloc(4);
      actual.writeUInt32BE(crc32(body));
      if (actual.toString('base64') !== crc)
        return refuse(400, 'BadDigest', 'The CRC32 you specified did not match');
    }
    return fault?.(call) ?? fetch(input, init);
  };
}

describe('the publisher’s store through upload links (emulated AWS)', () => {
  let aws: AwsEnvironment;
  let core: Core;
  let front: EmulatedHttpApi;
  const api = { calls: 0 };

  /** An execution launched by the dispatcher, and the secret its RunTask gave the publisher. */
  async function launched(): Promise<{ id: string; secret: string }> {
    const { executionId, publisherEnvironment } = await launchOnEcs(aws, core, {
      image: 'public.ecr.aws/docker/library/alpine:3.20',
      command: ['true'],
    });
    const secret = publisherEnvironment.FERRY_UPLOAD_SECRET;
    if (secret === undefined) throw new Error('the publisher was given no upload secret');
    return { id: executionId, secret };
  }

  function store(
    executionId: string,
    uploadSecret: string,
    options: { apiUrl?: string; fetch?: typeof fetch } = {},
  ): UploadLinkStore {
    return new UploadLinkStore({
      apiUrl: options.apiUrl ?? front.url,
      executionId,
      uploadSecret,
      region: REGION,
      credentials: TASK_KEY,
      partSize: PART,
      fetch: options.fetch ?? (s3Like(endpointFor('s3'), []) as typeof fetch),
      sleep: async () => undefined,
    });
  }

  async function object(key: string): Promise<{ bytes: Buffer; contentType?: string } | undefined> {
    try {
      const reply = await aws.clients.s3.send(new GetObjectCommand({ Bucket: aws.bucket, Key: key }));
      return {
        bytes: Buffer.from((await reply.Body?.transformToByteArray()) ?? []),
        ...(reply.ContentType === undefined ? {} : { contentType: reply.ContentType }),
      };
    } catch (error) {
      if (error instanceof NoSuchKey) return undefined;
      throw error;
    }
  }

  beforeAll(async () => {
    aws = await createAwsEnvironment();
    core = buildAwsCore(awsConfig(aws), aws.clients, silentLogger);
    front = await serveApi(core, api);
  });

  afterAll(() => front?.close());

  it('stores a multi-megabyte stream (multipart) and result.json byte-exact through presigned links', async () => {
    const { id, secret } = await launched();
    const calls: S3Call[] = [];
    const links = store(id, secret, { fetch: s3Like(endpointFor('s3'), calls) as typeof fetch });
    const produced = randomBytes(2 * PART + 123_457);
    // Chunks of odd sizes, as a pipe delivers them.
    const chunks = [];
    for (let at = 0; at < produced.length; at += 65_521) chunks.push(produced.subarray(at, at + 65_521));
    const manifest = JSON.stringify({ executionId: id, exitCode: 0, note: 'ünïcode ✓' }, null, 2);
    const before = api.calls;

    await links.put(`executions/${id}/stdout`, Readable.from(chunks), 'application/octet-stream');
    await links.put(`executions/${id}/result.json`, manifest, 'application/json');

    const stdout = await object(`executions/${id}/stdout`);
    expect(stdout?.bytes.equals(produced)).toBe(true);
    expect(await object(`executions/${id}/result.json`)).toEqual({
      bytes: Buffer.from(manifest),
      contentType: 'application/json',
    });
    // Three parts whose links came in one answer; nothing left half uploaded.
    expect(calls.filter((c) => c.query.has('partNumber')).map((c) => c.query.get('partNumber'))).toEqual([
      '1',
      '2',
      '3',
    ]);
    expect(api.calls - before).toBe(4); // create, the part links, complete; and result.json
    const pending = await aws.clients.s3.send(
      new ListMultipartUploadsCommand({ Bucket: aws.bucket, Prefix: `executions/${id}/` }),
    );
    expect(pending.Uploads ?? []).toEqual([]);
  });

  it('aborts a multipart upload S3 refused a part of, leaving nothing behind', async () => {
    const { id, secret } = await launched();
    const calls: S3Call[] = [];
    const refuseSecondPart = s3Like(endpointFor('s3'), calls, (call) =>
      call.query.get('partNumber') === '2'
        ? new Response('<Error><Code>InvalidRequest</Code><Message>refused</Message></Error>', {
            status: 400,
          })
        : undefined,
    );

    const stored = store(id, secret, { fetch: refuseSecondPart as typeof fetch }).put(
      `executions/${id}/stdout`,
      Readable.from([randomBytes(PART), randomBytes(PART), randomBytes(10)]),
    );

    await expect(stored).rejects.toThrow(/S3 refused uploadPart .*InvalidRequest: refused/);
    expect(calls.at(-1)).toMatchObject({ method: 'DELETE' });
    expect(calls.at(-1)?.query.has('uploadId')).toBe(true);
    const pending = await aws.clients.s3.send(
      new ListMultipartUploadsCommand({ Bucket: aws.bucket, Prefix: `executions/${id}/` }),
    );
    expect(pending.Uploads ?? []).toEqual([]);
    expect(await object(`executions/${id}/stdout`)).toBeUndefined();
  });

  it('refreshes and then deletes a live window', async () => {
    const { id, secret } = await launched();
    const links = store(id, secret);
    await links.put(`executions/${id}/live/stdout`, Buffer.from('{"start":0,"total":3}\nabc'));
    expect((await object(`executions/${id}/live/stdout`))?.bytes.toString()).toContain('abc');

    await links.delete(`executions/${id}/live/stdout`);
    await links.delete(`executions/${id}/live/stderr`);

    expect(await object(`executions/${id}/live/stdout`)).toBeUndefined();
  });

  it('cannot store another execution’s key, nor anything with a secret that is not the execution’s', async () => {
    const mine = await launched();
    const theirs = await launched();
    await store(theirs.id, theirs.secret).put(`executions/${theirs.id}/result.json`, '{"theirs":true}');

    const overwrite = () =>
      store(mine.id, mine.secret).put(`executions/${theirs.id}/result.json`, '{"forged":1}');
    const borrowed = () =>
      store(theirs.id, mine.secret).put(`executions/${theirs.id}/result.json`, '{"forged":2}');
    const guessed = () => store(theirs.id, 'x'.repeat(43)).put(`executions/${theirs.id}/stdout`, 'forged');

    await expect(overwrite()).rejects.toThrow(/Ferry answered 403 .*not a key of execution/);
    await expect(borrowed()).rejects.toThrow(/Ferry answered 403 .*upload secret is not one of/);
    await expect(guessed()).rejects.toThrow(/Ferry answered 403/);
    expect((await object(`executions/${theirs.id}/result.json`))?.bytes.toString()).toBe('{"theirs":true}');
    expect(await object(`executions/${theirs.id}/stdout`)).toBeUndefined();
  });

  it('is refused at the API front without a signature of a principal allowed the route', async () => {
    const { id, secret } = await launched();

    const unsigned = await fetch(`${front.url}/v1/executions/${id}/uploads`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'ferry-upload-secret': secret },
      body: JSON.stringify({ links: [{ action: 'put', key: `executions/${id}/stdout` }] }),
    });

    expect(unsigned.status).toBe(403);
    await unsigned.body?.cancel();
  });

  it('asks again for a link that ran out, and retries what S3 failed for a moment', async () => {
    const { id, secret } = await launched();
    const shortLived = await serveApi({ ...core, settings: { ...core.settings, uploadLinkSeconds: 2 } }, api);
    try {
      const calls: S3Call[] = [];
      let delayed = false;
      let failed = false;
      // The first PUT reaches S3 after its link ran out; the next one meets a 503.
      const s3 = s3Like(endpointFor('s3'), calls, (call) => {
        if (call.method !== 'PUT' || !delayed || failed) return undefined;
        failed = true;
        return new Response(
          '<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>',
          {
            status: 503,
          },
        );
      });
      const slowFirst = async (input: string | URL | Request, init?: RequestInit) => {
        if (init?.method === 'PUT' && !delayed) {
          delayed = true;
          await new Promise((resolve) => setTimeout(resolve, 3_100));
        }
        return s3(input, init);
      };
      const bytes = randomBytes(1000);

      await store(id, secret, { apiUrl: shortLived.url, fetch: slowFirst as typeof fetch }).put(
        `executions/${id}/stderr`,
        bytes,
      );

      expect((await object(`executions/${id}/stderr`))?.bytes.equals(bytes)).toBe(true);
      expect(failed).toBe(true);
      // Expired, then 503, then stored.
      expect(calls.filter((c) => c.method === 'PUT')).toHaveLength(3);
    } finally {
      await shortLived.close();
    }
  });
});
