// Inputs and outputs on AWS end to end: the synthesized stack on the emulator, each job's task
// realised as real containers. The stage container fetches the inputs from the deployment's
// bucket as the task role (which may read inputs/ and nothing else), the job sees them
// read-only at their paths, and the publisher stores what it leaves through upload links the
// api signs for that execution's output keys. Every AWS call is checked against the template's
// policies: each test ends with no call refused and the capacity ledger back to zero.
import { createHash } from 'node:crypto';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { ApiError } from '../../cli/client.ts';
import type { OutputResult, ResultManifest } from '../../shared/domain/execution.ts';
import { endpointFor, REGION } from '../support/aws.ts';
import { describeDenials, type Harness, startHarness } from '../support/emulated-aws.ts';

if (!inject('dockerAvailable') && process.env.CI === 'true') {
  throw new Error('CI=true but no Docker Engine: the emulated deployment cannot run tasks');
}

const image = inject('testImage');
const MiB = 1024 * 1024;
const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

interface ResultView {
  readonly manifest: ResultManifest;
  readonly links: { stdout: string; stderr: string; outputs: Record<string, string> };
}

let h: Harness;
let bucket: string;
let callsBefore = 0;
const reference = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));

beforeAll(async () => {
  h = await startHarness();
  bucket = h.deployment.ref(/^ExecutorResults[0-9A-F]+$/);
  // Put there by the deployer, who may write to the bucket (the emulator's key for its account).
  const s3 = new S3Client({
    region: REGION,
    endpoint: endpointFor('s3'),
    forcePathStyle: true,
    credentials: { accessKeyId: '123456789012', secretAccessKey: 'test' },
  });
  const put = (key: string, body: string | Buffer) =>
    s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
  await put('inputs/reference.bin', reference);
  for (let i = 0; i < 3; i++) await put(`inputs/refs/part-${i}.txt`, `part ${i}\n`);
  await put('inputs/refs/nested/deep.txt', 'deep\n');
  callsBefore = h.deployment.calls.length;
}, 180_000);
afterAll(async () => {
  await h?.close();
});
afterEach(async () => {
  await h.expectLedgerEmpty();
  const denied = h.denied(callsBefore);
  callsBefore = h.deployment.calls.length;
  expect(denied, describeDenials(denied)).toEqual([]);
});

const resultOf = async (id: string) =>
  (await h.client.json<ResultView>('GET', `/v1/executions/${id}/result`)).body;
const download = async (link: string): Promise<Buffer> => {
  const response = await fetch(link);
  expect(response.status, link).toBe(200);
  return Buffer.from(await response.arrayBuffer());
};
const outputNamed = (manifest: ResultManifest, name: string): OutputResult => {
  const output = manifest.outputs.find((o) => o.name === name);
  if (output === undefined) throw new Error(`no output ${name} in ${JSON.stringify(manifest.outputs)}`);
  return output;
};
const stdoutOf = async (id: string) =>
  (await h.client.bytes(`/v1/executions/${id}/logs?stream=stdout`)).body.toString();

describe.skipIf(!inject('dockerAvailable'))('data in and out of a Fargate task', () => {
  it('stages inputs read-only at their paths and stores every output with its digest', async () => {
    const script = [
      'cat /in/greeting.txt',
      'sha256sum /data/reference.bin | cut -d" " -f1',
      'find /data/refs -type f | sort',
      'for p in /data/new /data/refs/new /in/new; do touch $p 2>/dev/null && echo "$p writable" || echo "$p read-only"; done',
      'mkdir -p /out/many /res /links',
      'i=0; while [ $i -lt 1000 ]; do echo "file $i" > /out/many/f$i.txt; i=$((i+1)); done',
      'echo report > /res/report.txt',
      'dd if=/dev/urandom of=/res/large.bin bs=1048576 count=12 2>/dev/null',
      'ln -s /etc/passwd /res/passwd',
      'ln -s /etc/passwd /links/passwd; echo kept > /links/plain.txt',
    ].join('\n');
    const submitted = await h.submit({
      image,
      command: ['sh', '-c', script],
      inputs: [
        { content: 'hello from content\n', path: '/in/greeting.txt' },
        { url: `s3://${bucket}/inputs/reference.bin`, path: '/data/reference.bin' },
        { url: `s3://${bucket}/inputs/refs/`, path: '/data/refs', type: 'DIRECTORY' },
      ],
      outputs: [
        { path: '/res/report.txt' },
        { path: '/res/large.bin' },
        { path: '/res/passwd' },
        { path: '/out/many', type: 'DIRECTORY' },
        { path: '/links', type: 'DIRECTORY' },
      ],
    });
    expect(submitted.bid.constraints?.notes).toContain(
      'on Fargate the directory of a FILE input or output is a volume of its own: what the image has in /in, /data, /res is hidden',
    );
    const since = h.deployment.calls.length;
    const done = await h.waitFor(submitted.id, undefined, 180_000);
    expect(done.state, done.reason).toBe('COMPLETED');
    // The inputs were read as the task role, which IAM let read under inputs/.
    const reads = h.deployment.calls
      .slice(since)
      .filter((c) => c.service === 's3' && /TaskRole/.test(c.principal))
      .map((c) => `${c.operation} ${c.authorizations.map((a) => `${a.action} ${a.allowed}`).join(',')}`);
    expect(reads).toEqual(
      expect.arrayContaining(['GetObject s3:GetObject true', 'ListObjectsV2 s3:ListBucket true']),
    );
    expect(done.exitCode).toBe(0);
    expect(await stdoutOf(done.id)).toBe(
      [
        'hello from content',
        sha256(reference),
        '/data/refs/nested/deep.txt',
        '/data/refs/part-0.txt',
        '/data/refs/part-1.txt',
        '/data/refs/part-2.txt',
        '/data/new read-only',
        '/data/refs/new read-only',
        '/in/new read-only',
        '',
      ].join('\n'),
    );

    const { manifest, links } = await resultOf(done.id);
    expect(manifest.partial).toBe(false);
    const report = outputNamed(manifest, 'report.txt');
    expect(report).toMatchObject({ bytes: 7, files: 1, truncated: false, sha256: sha256('report\n') });
    expect((await download(links.outputs['report.txt'] ?? '')).toString()).toBe('report\n');
    // Twelve MiB: a multipart upload, every part through a link signed for that key.
    const large = outputNamed(manifest, 'large.bin');
    expect(large).toMatchObject({ bytes: 12 * MiB, totalBytes: 12 * MiB, truncated: false });
    expect(sha256(await download(links.outputs['large.bin'] ?? ''))).toBe(large.sha256);
    // A symbolic link is not followed, as a FILE output or inside a directory.
    expect(outputNamed(manifest, 'passwd')).toMatchObject({
      bytes: 0,
      truncated: true,
      skipped: [{ reason: 'a symbolic link: not followed' }],
    });
    expect(outputNamed(manifest, 'links')).toMatchObject({
      files: 1,
      entries: [{ path: 'plain.txt', sha256: sha256('kept\n') }],
      skipped: [{ path: 'passwd', reason: 'a symbolic link: not followed' }],
    });
    const many = outputNamed(manifest, 'many');
    expect(many.files).toBe(1000);
    expect(many.truncated).toBe(false);
    for (const entry of many.entries ?? []) {
      const n = /^f(\d+)\.txt$/.exec(entry.path)?.[1];
      expect(entry.sha256).toBe(sha256(`file ${n}\n`));
    }
    for (const n of [0, 499, 999]) {
      expect((await download(links.outputs[`many/f${n}.txt`] ?? '')).toString()).toBe(`file ${n}\n`);
    }
  }, 240_000);

  it('keeps the outputs of a job that timed out, marked partial, truncated and skipped at their limits', async () => {
    const script = [
      'mkdir -p /big /dir',
      'dd if=/dev/zero of=/big/big.bin bs=1048576 count=3 2>/dev/null',
      'echo small > /dir/a-small.txt',
      'dd if=/dev/zero of=/dir/b-large.bin bs=1048576 count=2 2>/dev/null',
      'echo written',
      'sleep 60',
    ].join('\n');
    const started = Date.now();
    const submitted = await h.submit({
      image,
      command: ['sh', '-c', script],
      timeoutSeconds: 5,
      outputs: [{ path: '/big/big.bin' }, { path: '/dir', type: 'DIRECTORY' }],
      outputLimits: { outputBytes: MiB },
    });
    const done = await h.waitFor(submitted.id, undefined, 120_000);
    expect(done.state).toBe('TIMED_OUT');
    expect(Date.now() - started).toBeLessThan(60_000);
    const { manifest } = await resultOf(done.id);
    expect(manifest.partial).toBe(true);
    expect(outputNamed(manifest, 'big.bin')).toMatchObject({
      bytes: MiB,
      totalBytes: 3 * MiB,
      truncated: true,
      sha256: sha256(Buffer.alloc(MiB)),
    });
    expect(outputNamed(manifest, 'dir')).toMatchObject({
      files: 1,
      truncated: true,
      entries: [{ path: 'a-small.txt', bytes: 6 }],
      skipped: [{ path: 'b-large.bin', bytes: 2 * MiB }],
    });
  }, 180_000);

  it('fails a job whose input is missing before its command runs, naming the URL', async () => {
    const url = `s3://${bucket}/inputs/not-there.csv`;
    const submitted = await h.submit({
      image,
      command: ['sh', '-c', 'echo the command ran'],
      inputs: [{ url, path: '/data/in.csv' }],
    });
    expect(submitted.bid.constraints?.notes).toContain(
      `input ${url} is not there now; the job fails before it runs if it is still missing then`,
    );
    const done = await h.waitFor(submitted.id, undefined, 120_000);
    expect(done.state).toBe('FAILED');
    expect(done.exitCode).toBeNull();
    expect(done.reason).toContain(url);
    expect(done.reason).toMatch(/^the job could not start: input .* could not be fetched/);
    expect(await stdoutOf(done.id)).toBe('');
  }, 180_000);

  it('declines in the bid an input from another bucket, and a volume over what the image needs', async () => {
    const declined = await h.client
      .json('POST', '/v1/jobs', {
        image,
        command: ['true'],
        inputs: [
          { url: 's3://someone-elses-bucket/data.csv', path: '/data/in.csv' },
          { content: 'x', path: '/etc/app.conf' },
        ],
      })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(declined).toBeInstanceOf(ApiError);
    expect((declined as ApiError).status).toBe(422);
    const detail = (declined as ApiError).problem.detail ?? '';
    expect(detail).toContain(
      `input s3://someone-elses-bucket/data.csv is not from an allowed source; FERRY_INPUT_ALLOW allows s3://${bucket}/inputs/`,
    );
    expect(detail).toContain('/etc would be a volume of its own on Fargate (it holds input /etc/app.conf)');
  });
});
