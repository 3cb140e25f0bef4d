// Inputs and outputs on the Docker backend, end to end: jobs go in over HTTP to a `ferry serve`
// process, their inputs come from the emulator's S3 and from an https server on loopback, they
// run as real containers, and what they leave is read back through the result's links.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Execution, ResultManifest } from '../../shared/domain/execution.ts';
import { type AwsEnvironment, createAwsEnvironment, endpointFor } from '../support/aws.ts';
import { removeContainersOf } from '../support/docker.ts';
import {
  type ServerProcess,
  spawnServer,
  startServer,
  stdoutOf,
  submit,
  type TestServer,
  tempDir,
  waitDone,
} from '../support/server.ts';

const dockerAvailable = inject('dockerAvailable');
const image = inject('testImage');
if (!dockerAvailable && process.env.CI === 'true') {
  throw new Error('CI=true but no Docker Engine is available: the data suite must run');
}

interface ResultView {
  readonly manifest: ResultManifest;
  readonly links: { stdout: string; stderr: string; outputs: Record<string, string> };
}

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const MiB = 1024 * 1024;

describe.skipIf(!dockerAvailable)('inputs and outputs on the Docker backend', () => {
  let aws: AwsEnvironment;
  let server: ServerProcess;
  let web: https.Server;
  let webUrl: string;
  let dataDir: string;
  const ids: string[] = [];

  const run = async (spec: Record<string, unknown>): Promise<Execution> => {
    const submitted = await submit(server.client, { image, timeoutSeconds: 60, ...spec });
    ids.push(submitted.id);
    return waitDone(server.client, submitted.id, 120);
  };
  const resultOf = async (id: string) =>
    (await server.client.json<ResultView>('GET', `/v1/executions/${id}/result`)).body;
  const download = async (link: string): Promise<Buffer> =>
    Buffer.from(await (await fetch(link)).arrayBuffer());

  beforeAll(async () => {
    aws = await createAwsEnvironment();
    const put = (key: string, body: string | Buffer) =>
      aws.clients.s3.send(new PutObjectCommand({ Bucket: aws.bucket, Key: key, Body: body }));
    await put('inputs/table.csv', 'a,b\n1,2\n');
    await put('inputs/refs/one.txt', 'one\n');
    await put('inputs/refs/deeper/two.txt', 'two\n');

    // An https server on loopback, with a certificate made for the test and trusted by the
    // server through NODE_EXTRA_CA_CERTS, as a private CA would be.
    dataDir = await tempDir('ferry-data-');
    const key = path.join(dataDir, 'web.key');
    const cert = path.join(dataDir, 'web.crt');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    web = https.createServer({ key: await fsp.readFile(key), cert: await fsp.readFile(cert) }, (req, res) => {
      if (req.url === '/page.txt') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('from the web\n');
        return;
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
    webUrl = `https://127.0.0.1:${(web.address() as AddressInfo).port}`;

    server = await spawnServer({
      FERRY_BACKEND: 'docker',
      FERRY_DATA_DIR: path.join(dataDir, 'server'),
      FERRY_INPUT_ALLOW: `s3://${aws.bucket}/inputs/,${webUrl}/`,
      FERRY_S3_FORCE_PATH_STYLE: 'true',
      AWS_ENDPOINT_URL_S3: endpointFor('s3'),
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_REGION: 'us-east-1',
      NODE_EXTRA_CA_CERTS: cert,
    });
  }, 120_000);

  afterAll(async () => {
    await server?.kill('SIGTERM');
    await removeContainersOf(ids);
    web?.close();
    if (dataDir !== undefined) await fsp.rm(dataDir, { recursive: true, force: true });
  });

  it('stages a file and a directory from S3 and a file from https at their paths, read-only', async () => {
    const done = await run({
      command: [
        'sh',
        '-c',
        'cat /data/table.csv; find /data/refs -type f | sort; cat /data/refs/deeper/two.txt; cat /web/page.txt; ' +
          'if echo x > /data/table.csv 2>/dev/null; then echo writable; else echo read-only; fi; ' +
          'if touch /data/refs/new 2>/dev/null; then echo writable; else echo read-only; fi',
      ],
      inputs: [
        { url: `s3://${aws.bucket}/inputs/table.csv`, path: '/data/table.csv' },
        { url: `s3://${aws.bucket}/inputs/refs/`, path: '/data/refs', type: 'DIRECTORY' },
        { url: `${webUrl}/page.txt`, path: '/web/page.txt' },
      ],
    });

    expect(done.state, done.reason).toBe('COMPLETED');
    expect((await stdoutOf(server.client, done.id)).toString()).toBe(
      'a,b\n1,2\n/data/refs/deeper/two.txt\n/data/refs/one.txt\ntwo\nfrom the web\nread-only\nread-only\n',
    );
  });

  it('stores a file and a directory of 1,000 files with their digests, each with a link', async () => {
    const done = await run({
      command: [
        'sh',
        '-c',
        'echo report > /out/report.txt; mkdir -p /out/many; i=0; ' +
          'while [ $i -lt 1000 ]; do echo "file $i" > /out/many/f$i.txt; i=$((i+1)); done',
      ],
      outputs: [{ path: '/out/report.txt' }, { path: '/out/many', type: 'DIRECTORY' }],
    });

    expect(done.state, done.reason).toBe('COMPLETED');
    const result = await resultOf(done.id);
    const [report, many] = result.manifest.outputs;
    expect(report).toMatchObject({
      name: 'report.txt',
      type: 'FILE',
      bytes: 7,
      truncated: false,
      sha256: sha256('report\n'),
    });
    expect(many).toMatchObject({ name: 'many', type: 'DIRECTORY', files: 1000, truncated: false });
    const expected = new Map(
      Array.from({ length: 1000 }, (_, i) => [`f${i}.txt`, sha256(`file ${i}\n`)] as const),
    );
    expect(new Map(many?.entries?.map((e) => [e.path, e.sha256]))).toEqual(expected);
    expect(Object.keys(result.links.outputs)).toHaveLength(1001);
    expect((await download(result.links.outputs['report.txt'] ?? '')).toString()).toBe('report\n');
    expect((await download(result.links.outputs['many/f999.txt'] ?? '')).toString()).toBe('file 999\n');
  }, 180_000);

  it('cuts a file over its limit and skips what does not fit a directory, flagged, the job not slowed', async () => {
    const done = await run({
      command: [
        'sh',
        '-c',
        'head -c 3145728 /dev/zero > /out/big.bin; mkdir /out/dir; echo small > /out/dir/a.txt; ' +
          'head -c 2097152 /dev/zero > /out/dir/b.bin; echo tiny > /out/dir/c.txt',
      ],
      outputs: [{ path: '/out/big.bin' }, { path: '/out/dir', type: 'DIRECTORY' }],
      outputLimits: { outputBytes: '1MiB' },
    });

    expect(done.state, done.reason).toBe('COMPLETED');
    const [big, dir] = (await resultOf(done.id)).manifest.outputs;
    expect(big).toMatchObject({
      bytes: MiB,
      totalBytes: 3 * MiB,
      truncated: true,
      sha256: sha256(Buffer.alloc(MiB)),
    });
    expect(dir).toMatchObject({
      files: 2,
      bytes: 11,
      totalBytes: 2 * MiB + 11,
      truncated: true,
      skippedCount: 1,
    });
    expect(dir?.entries?.map((e) => e.path)).toEqual(['a.txt', 'c.txt']);
    expect(dir?.skipped?.[0]).toMatchObject({ path: 'b.bin', bytes: 2 * MiB });
  });

  it('does not follow a symbolic link to /etc/passwd in an output', async () => {
    const done = await run({
      command: [
        'sh',
        '-c',
        'mkdir /out/dir; ln -s /etc/passwd /out/dir/leak; echo fine > /out/dir/ok.txt; ln -s /etc/passwd /out/leak.txt',
      ],
      outputs: [{ path: '/out/dir', type: 'DIRECTORY' }, { path: '/out/leak.txt' }],
    });

    expect(done.state, done.reason).toBe('COMPLETED');
    const result = await resultOf(done.id);
    const [dir, file] = result.manifest.outputs;
    expect(dir?.entries?.map((e) => e.path)).toEqual(['ok.txt']);
    expect(dir?.skipped).toEqual([{ path: 'leak', reason: 'a symbolic link: not followed' }]);
    expect(file).toMatchObject({ files: 0, bytes: 0, truncated: true });
    expect(file?.skipped?.[0]?.reason).toBe('a symbolic link: not followed');
    expect(Object.keys(result.links.outputs)).toEqual(['dir/ok.txt']);
  });

  it('publishes the outputs with the streams on accept, and lists each with its address and digest', async () => {
    const done = await run({
      command: ['sh', '-c', 'echo table > /out/t.csv; mkdir /out/d; echo x > /out/d/x.txt'],
      outputs: [{ path: '/out/t.csv' }, { path: '/out/d', type: 'DIRECTORY' }],
      publish: { destination: 's3://shared/results' },
    });
    await server.client.json('POST', `/v1/executions/${done.id}/result/accept`);

    const published = path.join(dataDir, 'server', 'published', 'shared', 'results', done.id);
    const list = JSON.parse(await fsp.readFile(path.join(published, 'published.json'), 'utf8'));
    expect(list.outputs).toEqual([
      expect.objectContaining({
        name: 't.csv',
        url: `s3://shared/results/${done.id}/outputs/t.csv`,
        bytes: 6,
        sha256: sha256('table\n'),
        truncated: false,
      }),
      expect.objectContaining({
        name: 'd',
        url: `s3://shared/results/${done.id}/outputs/d/`,
        entries: [
          {
            path: 'x.txt',
            bytes: 2,
            sha256: sha256('x\n'),
            url: `s3://shared/results/${done.id}/outputs/d/x.txt`,
          },
        ],
      }),
    ]);
    expect(list.stdout).toMatchObject({ url: `s3://shared/results/${done.id}/stdout`, bytes: 0 });
    expect(await fsp.readFile(path.join(published, 'outputs', 't.csv'), 'utf8')).toBe('table\n');
    expect(await fsp.readFile(path.join(published, 'outputs', 'd', 'x.txt'), 'utf8')).toBe('x\n');
  });

  it('keeps the outputs of a job that timed out, marked partial', async () => {
    const done = await run({
      command: ['sh', '-c', 'echo so far > /out/progress.txt; sleep 60'],
      outputs: [{ path: '/out/progress.txt' }],
      timeoutSeconds: 2,
    });

    expect(done.state).toBe('TIMED_OUT');
    const result = await resultOf(done.id);
    expect(result.manifest.partial).toBe(true);
    expect(result.manifest.outputs[0]).toMatchObject({ name: 'progress.txt', sha256: sha256('so far\n') });
  });

  it('fails a job whose input is missing before its command runs, naming the URL', async () => {
    const url = `s3://${aws.bucket}/inputs/not-there.csv`;
    const done = await run({
      command: ['sh', '-c', 'echo ran'],
      inputs: [{ url, path: '/data/in.csv' }],
    });

    expect(done.state).toBe('FAILED');
    expect(done.reason).toContain(url);
    expect(done.startedAt).toBeUndefined();
    expect(done.result).toBeUndefined();
  });

  it('declines in the bid an input from a bucket it does not allow, naming it', async () => {
    const bid = await server.client.json<{ bid: { accepted: boolean; reason: string } }>('POST', '/v1/bids', {
      image,
      command: ['true'],
      inputs: [{ url: 's3://someone-elses-bucket/data.csv', path: '/data/in.csv' }],
    });

    expect(bid.body.bid.accepted).toBe(false);
    expect(bid.body.bid.reason).toContain(
      'input s3://someone-elses-bucket/data.csv is not from an allowed source',
    );
  });
});

describe('inputs and outputs on the process backend', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startServer({ FERRY_BACKEND: 'process' });
  });
  afterAll(async () => {
    await server?.close();
    if (server !== undefined) await fsp.rm(server.dataDir, { recursive: true, force: true });
  });

  it('stages inputs and collects outputs below the job’s own root, which the bid says', async () => {
    const spec = {
      image: 'x/y:1',
      command: ['sh', '-c', 'pwd; cp "$FERRY_ROOT/etc/app.conf" out/copy.txt'],
      inputs: [{ content: 'setting=1\n', path: '/etc/app.conf' }],
      outputs: [{ path: '/out/copy.txt' }],
    };
    const bid = await server.client.json<{ bid: { constraints: { notes: string[] } } }>(
      'POST',
      '/v1/bids',
      spec,
    );
    expect(bid.body.bid.constraints.notes.join('\n')).toContain(
      'the process backend has no container: input and output paths are inside the job’s own directory, $FERRY_ROOT',
    );

    const submitted = await submit(server.client, spec);
    const done = await waitDone(server.client, submitted.id);

    expect(done.state, done.reason).toBe('COMPLETED');
    const root = (await stdoutOf(server.client, done.id)).toString().trim();
    expect(path.basename(root)).toBe(done.id);
    const result = (await server.client.json<ResultView>('GET', `/v1/executions/${done.id}/result`)).body;
    expect(result.manifest.outputs[0]).toMatchObject({ name: 'copy.txt', sha256: sha256('setting=1\n') });
    // The job's directory goes with the job, as a container's file system would.
    await expect(fsp.stat(root)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('file:// inputs from the server’s own machine', () => {
  let server: TestServer;
  let shared: string;

  beforeAll(async () => {
    shared = await tempDir('ferry-shared-');
    await fsp.mkdir(path.join(shared, 'refs', 'nested'), { recursive: true });
    await fsp.writeFile(path.join(shared, 'sample.txt'), 'sample\n');
    await fsp.writeFile(path.join(shared, 'refs', 'a.txt'), 'a\n');
    await fsp.writeFile(path.join(shared, 'refs', 'nested', 'b.txt'), 'b\n');
    // Links inside the allowed directory that lead out of it.
    await fsp.symlink('/etc/passwd', path.join(shared, 'passwd'));
    await fsp.symlink('/etc/passwd', path.join(shared, 'refs', 'passwd'));
    // Ferry's own data directory inside the allowed one: it is still never read.
    server = await startServer(
      { FERRY_BACKEND: 'process', FERRY_INPUT_ALLOW: `file://${shared}/` },
      path.join(shared, 'ferry-data'),
    );
  });
  afterAll(async () => {
    await server?.close();
    if (server !== undefined) await fsp.rm(server.dataDir, { recursive: true, force: true });
    await fsp.rm(shared, { recursive: true, force: true });
  });

  it('copies a file and a directory from an allowed directory, links left behind', async () => {
    const done = await waitDone(
      server.client,
      (
        await submit(server.client, {
          image: 'x/y:1',
          command: [
            'sh',
            '-c',
            'cd "$FERRY_ROOT" && cat in/sample.txt && find in/refs -type f -o -type l | sort',
          ],
          inputs: [
            { url: `file://${shared}/sample.txt`, path: '/in/sample.txt' },
            { url: `file://${shared}/refs`, path: '/in/refs', type: 'DIRECTORY' },
          ],
        })
      ).id,
    );
    expect(done.state, done.reason).toBe('COMPLETED');
    expect((await stdoutOf(server.client, done.id)).toString()).toBe(
      'sample\nin/refs/a.txt\nin/refs/nested/b.txt\n',
    );
  });

  it('fails a job whose file leads out of the allowed directory, and declines one outside it', async () => {
    const escaped = await waitDone(
      server.client,
      (
        await submit(server.client, {
          image: 'x/y:1',
          command: ['cat', 'in/passwd'],
          inputs: [{ url: `file://${shared}/passwd`, path: '/in/passwd' }],
        })
      ).id,
    );
    expect(escaped.state).toBe('FAILED');
    expect(escaped.reason).toContain(
      `input file://${shared}/passwd could not be fetched: it resolves to /etc/passwd, outside the directories FERRY_INPUT_ALLOW names`,
    );

    const outside = await server.client.json<{ bid: { accepted: boolean; reason: string } }>(
      'POST',
      '/v1/bids',
      {
        image: 'x/y:1',
        command: ['true'],
        inputs: [{ url: `file://${shared}/../etc/passwd`, path: '/in/passwd' }],
      },
    );
    expect(outside.body.bid.accepted).toBe(false);
    // The URL's ".." is resolved before the check: the path asked for is /etc/passwd's.
    expect(outside.body.bid.reason).toContain('is not from an allowed source');

    const own = await waitDone(
      server.client,
      (
        await submit(server.client, {
          image: 'x/y:1',
          command: ['true'],
          inputs: [{ url: `file://${shared}/ferry-data`, path: '/in/ferry', type: 'DIRECTORY' }],
        })
      ).id,
    );
    expect(own.state).toBe('FAILED');
    expect(own.reason).toContain("could not be fetched: it is inside Ferry's own data directory");
  });
});
