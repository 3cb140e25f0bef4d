// The Fargate publisher's throughput and memory: 1 GiB written by a job through the
// static wrapper into the FIFOs, captured under a 10 MiB limit and stored in (emulated) S3.
// The baseline is the same wrapper and FIFO drained by `cat` into /dev/null.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { executionIds } from '../shared/adapters/system.ts';

const GiB = 1024 ** 3;

export interface PublisherBench {
  readonly bytes: number;
  readonly rawMiBps: number;
  readonly publisherMiBps: number;
  readonly ratio: number;
  readonly peakRssMiB: number;
  readonly storedBytes: number;
}

async function prepare(wrapper: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferry-publisher-bench-'));
  execFileSync(wrapper, ['--init', dir]);
  return dir;
}

function job(wrapper: string, dir: string, bytes: number) {
  return spawn(wrapper, ['--io', path.join(dir, 'io'), '--', 'head', '-c', String(bytes), '/dev/zero'], {
    stdio: 'ignore',
  });
}

export async function benchPublisher(endpoint: string, bytes = GiB): Promise<PublisherBench> {
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferry-wrapper-'));
  const wrapper = path.join(work, 'ferry-wrapper');
  execFileSync('gcc', ['-static', '-O2', '-o', wrapper, 'runner/wrapper/ferry-wrapper.c']);

  // Baseline: the same FIFOs, drained and discarded.
  const rawDir = await prepare(wrapper);
  const rawStart = performance.now();
  const drains = ['stdout', 'stderr'].map((name) =>
    spawn('sh', ['-c', `cat "${path.join(rawDir, 'io', name)}" > /dev/null`], { stdio: 'ignore' }),
  );
  const rawJob = job(wrapper, rawDir, bytes);
  await Promise.all([once(rawJob, 'exit'), ...drains.map((d) => once(d, 'exit'))]);
  const rawSeconds = (performance.now() - rawStart) / 1000;

  const bucket = `ferry-bench-${Date.now()}`;
  const s3 = new S3Client({
    region: 'us-east-1',
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  s3.destroy();

  // The publisher as the runner image runs it: one bundled file, plain node.
  const bundle = path.join(work, 'publisher.mjs');
  execFileSync(process.execPath, ['scripts/bundle-publisher.mjs', bundle]);
  const dir = await prepare(wrapper);
  const executionId = executionIds().next();
  const started = performance.now();
  const publisher = spawn(process.execPath, ['--import', path.resolve('bench/rss-report.mjs'), bundle], {
    env: {
      PATH: process.env.PATH,
      FERRY_EXECUTION_ID: executionId,
      FERRY_BUCKET: bucket,
      FERRY_OUTPUT_LIMITS: JSON.stringify({
        stdoutBytes: 10 * 1024 * 1024,
        stderrBytes: 10 * 1024 * 1024,
        inlineBytes: 4096,
        keep: 'head+tail',
      }),
      FERRY_IO_DIR: path.join(dir, 'io'),
      FERRY_S3_FORCE_PATH_STYLE: 'true',
      FERRY_LOG_LEVEL: 'info',
      AWS_ENDPOINT_URL: endpoint,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_REGION: 'us-east-1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  publisher.stdout?.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  publisher.stderr?.on('data', (chunk: Buffer) => {
    err += chunk.toString();
  });
  const running = job(wrapper, dir, bytes);
  const [[code]] = await Promise.all([once(publisher, 'exit'), once(running, 'exit')]);
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`the publisher failed (${code}): ${out}${err}`);
  const stored = /"stdoutBytes":(\d+)/.exec(out);
  if (stored?.[1] !== String(bytes))
    throw new Error(`the publisher counted ${stored?.[1]} bytes, not ${bytes}: ${out}`);
  const rss = Number(/ferry-bench-max-rss-kib (\d+)/.exec(err)?.[1] ?? 'NaN');
  await Promise.all([work, rawDir, dir].map((d) => fsp.rm(d, { recursive: true, force: true })));
  const mib = bytes / 1024 ** 2;
  return {
    bytes,
    rawMiBps: mib / rawSeconds,
    publisherMiBps: mib / seconds,
    ratio: rawSeconds / seconds,
    peakRssMiB: rss / 1024,
    storedBytes: 10 * 1024 * 1024,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const endpoint = process.argv[2];
  if (endpoint === undefined) throw new Error('usage: node --import tsx bench/publisher.ts <s3-endpoint>');
  console.log(await benchPublisher(endpoint));
}
