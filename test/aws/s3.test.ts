// The object store on S3, against the emulator: what goes in comes out byte for byte,
// ranges and listings behave like the local directory store, links work without credentials.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { beforeAll, describe, expect, it } from 'vitest';
import { FerryClient, sigv4Signer } from '../../cli/client.ts';
import { S3ObjectStore } from '../../shared/adapters/aws/s3-object-store.ts';
import { type AwsEnvironment, createAwsEnvironment } from '../support/aws.ts';

const MiB = 1024 * 1024;

/** `size` bytes that differ from chunk to chunk and cover every byte value, made as they are read. */
function patternedStream(size: number, chunkSize = 64 * 1024): { stream: Readable; sha256: Promise<string> } {
  const hash = createHash('sha256');
  let produced = 0;
  let finish: (digest: string) => void = () => undefined;
  const sha256 = new Promise<string>((resolve) => {
    finish = resolve;
  });
  const stream = new Readable({
    read() {
      if (produced >= size) {
        finish(hash.digest('hex'));
        this.push(null);
        return;
      }
      const chunk = Buffer.alloc(Math.min(chunkSize, size - produced));
      for (let i = 0; i < chunk.length; i++)
        chunk[i] = (produced + i * 31 + Math.floor(produced / chunkSize)) & 0xff;
      produced += chunk.length;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  return { stream, sha256 };
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('S3 object store', () => {
  let aws: AwsEnvironment;
  let store: S3ObjectStore;

  beforeAll(async () => {
    aws = await createAwsEnvironment();
    store = new S3ObjectStore(aws.bucket, aws.clients.s3);
  });

  it('stores a Buffer and a string exactly, with their content type', async () => {
    const binary = Buffer.from([0, 1, 2, 0xfe, 0xff, 0x80, 0x0a, 0x0d, 0]);
    await store.put('t1/binary', binary);
    await store.put('t1/text', 'héllo\nwörld ✓', 'text/plain; charset=utf-8');

    expect(await store.get('t1/binary')).toEqual(binary);
    expect((await store.get('t1/text'))?.toString('utf8')).toBe('héllo\nwörld ✓');
    const head = await aws.clients.s3.send(new HeadObjectCommand({ Bucket: aws.bucket, Key: 't1/text' }));
    expect(head.ContentType).toBe('text/plain; charset=utf-8');
    expect(head.ContentLength).toBe(Buffer.byteLength('héllo\nwörld ✓'));
  });

  it('streams a Readable larger than one part through a multipart upload, byte exact', async () => {
    const size = 20 * MiB + 12345;
    const { stream, sha256: sent } = patternedStream(size);

    await store.put('t2/big', stream);

    const back = await store.get('t2/big');
    expect(back?.length).toBe(size);
    expect(sha256(back ?? Buffer.alloc(0))).toBe(await sent);
    // A multipart object's ETag is "<md5 of the part md5s>-<parts>": 8 MiB parts make three.
    const head = await aws.clients.s3.send(new HeadObjectCommand({ Bucket: aws.bucket, Key: 't2/big' }));
    expect(head.ETag).toMatch(/-3"$/);
  });

  it('reads a missing object as undefined', async () => {
    expect(await store.get('t3/missing')).toBeUndefined();
    expect(await store.getRange('t3/missing', 0, 10)).toBeUndefined();
    expect(await store.head('t3/missing')).toBeUndefined();
  });

  it('reads byte ranges, cut short at the end of the object', async () => {
    const data = Buffer.from('0123456789abcdefghij');
    await store.put('t4/range', data);

    expect((await store.getRange('t4/range', 3, 7))?.toString()).toBe('3456');
    expect((await store.getRange('t4/range', 0, 20))?.toString()).toBe(data.toString());
    expect((await store.getRange('t4/range', 15, 100))?.toString()).toBe('fghij');
    expect(await store.getRange('t4/range', 20, 30)).toEqual(Buffer.alloc(0));
    expect(await store.getRange('t4/range', 50, 60)).toEqual(Buffer.alloc(0));
    expect(await store.getRange('t4/range', 5, 5)).toEqual(Buffer.alloc(0));
  });

  it('heads an object for its size', async () => {
    await store.put('t5/sized', Buffer.alloc(1234, 7));

    expect(await store.head('t5/sized')).toEqual({ key: 't5/sized', size: 1234 });
  });

  it('lists by prefix only what is under the prefix', async () => {
    await store.put('t6/executions/a/stdout', 'aa');
    await store.put('t6/executions/a/outputs/x.bin', 'xxxx');
    await store.put('t6/executions/ab/stdout', 'b');
    await store.put('t6/other', 'o');

    const listed = await store.list('t6/executions/a/');

    expect([...listed].sort((x, y) => x.key.localeCompare(y.key))).toEqual([
      { key: 't6/executions/a/outputs/x.bin', size: 4 },
      { key: 't6/executions/a/stdout', size: 2 },
    ]);
    expect(await store.list('t6/nothing-here/')).toEqual([]);
  });

  it('deletes everything under a prefix and nothing else', async () => {
    for (let i = 0; i < 5; i++) await store.put(`t7/executions/x/part-${i}`, String(i));
    await store.put('t7/executions/xy/keep', 'keep');

    await store.deletePrefix('t7/executions/x/');

    expect(await store.list('t7/executions/x/')).toEqual([]);
    expect((await store.get('t7/executions/xy/keep'))?.toString()).toBe('keep');
    await store.deletePrefix('t7/executions/none/');
  });

  it('deletes one key and not the keys it is a prefix of; a missing key is no error', async () => {
    await store.put('t7b/executions/x/live/stdout', 'live');
    await store.put('t7b/executions/x/live/stdout.old', 'old');

    await store.delete('t7b/executions/x/live/stdout');
    await store.delete('t7b/executions/x/live/stdout');

    expect(await store.get('t7b/executions/x/live/stdout')).toBeUndefined();
    expect((await store.get('t7b/executions/x/live/stdout.old'))?.toString()).toBe('old');
  });

  it('copies within its bucket and to an s3:// destination in another bucket', async () => {
    const other = `${aws.bucket}-published`;
    await aws.clients.s3.send(new CreateBucketCommand({ Bucket: other }));
    const data = Buffer.from([9, 8, 7, 0, 255]);
    await store.put('t8/executions/e 1/out put+&.bin', data);

    await store.copy('t8/executions/e 1/out put+&.bin', 't8/copy.bin');
    await store.copy('t8/executions/e 1/out put+&.bin', `s3://${other}/results/e 1/out put+&.bin`);

    expect(await store.get('t8/copy.bin')).toEqual(data);
    const published = await aws.clients.s3.send(
      new GetObjectCommand({ Bucket: other, Key: 'results/e 1/out put+&.bin' }),
    );
    expect(Buffer.from((await published.Body?.transformToByteArray()) ?? [])).toEqual(data);
  });

  it('signs a download link that fetches the bytes without credentials', async () => {
    const data = Buffer.from([0, 1, 2, 3, 250, 251, 252, 253]);
    await store.put('t9/executions/e/stdout', data);

    const url = await store.downloadUrl('t9/executions/e/stdout', 60);
    const reply = await fetch(url);

    expect(new URL(url).searchParams.get('X-Amz-Expires')).toBe('60');
    expect(reply.status).toBe(200);
    expect(Buffer.from(await reply.arrayBuffer())).toEqual(data);
  });

  it('a signed client follows a logs redirect to the presigned link without its own signature', async () => {
    const data = Buffer.alloc(3 * MiB, 'ferry\n');
    await store.put('t10/executions/e/stdout', data);
    const link = await store.downloadUrl('t10/executions/e/stdout', 60);
    const seen: http.IncomingHttpHeaders[] = [];
    const recorder = await listen((request, response) => {
      seen.push(request.headers);
      response.end('recorded');
    });
    let target = link;
    const api = await listen((_request, response) => {
      response.writeHead(303, { location: target }).end();
    });
    const client = new FerryClient(
      api.url,
      undefined,
      sigv4Signer({ region: 'us-east-1', credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'x' } }),
    );
    try {
      const fromS3 = await client.bytes('/v1/executions/e/logs?stream=stdout');
      target = `${recorder.url}/objects/e`;
      await client.bytes('/v1/executions/e/logs?stream=stdout');

      expect(fromS3.status).toBe(200);
      expect(fromS3.body.equals(data)).toBe(true);
      expect(seen).toHaveLength(1);
      expect(Object.keys(seen[0] ?? {}).filter((name) => /^(authorization|x-amz-)/.test(name))).toEqual([]);
    } finally {
      await Promise.all([api.close(), recorder.close()]);
    }
  });
});

async function listen(handler: http.RequestListener) {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
