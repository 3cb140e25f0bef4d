// The Fargate publisher's throughput and memory: 1 GiB written by a job through the
// static wrapper into the FIFOs, captured under a 10 MiB limit and stored in (emulated) S3.
// The baseline is the same wrapper and FIFO drained by `cat` into /dev/null; both sides run
// three interleaved rounds and the medians are compared.
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

/** Rounds of each side, interleaved: one round of either is well under a second, so noisy. */
const ROUNDS = 3;

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
};

/** Baseline: the same FIFOs, drained and discarded. Resolves with the seconds it took. */
async function rawRound(wrapper: string, bytes: number): Promise<number> {
  const rawDir = await prepare(wrapper);
  const started = performance.now();
  const drains = ['stdout', 'stderr'].map((name) =>
    spawn('sh', ['-c', `cat "${path.join(rawDir, 'io', name)}" > /dev/null`], { stdio: 'ignore' }),
  );
  const rawJob = job(wrapper, rawDir, bytes);
  await Promise.all([once(rawJob, 'exit'), ...drains.map((d) => once(d, 'exit'))]);
  const seconds = (performance.now() - started) / 1000;
  await fsp.rm(rawDir, { recursive: true, force: true });
  return seconds;
}

/** The publisher as the runner image runs it: one bundled file, plain node. */
async function publisherRound(
  wrapper: string,
  bundle: string,
  endpoint: string,
  bucket: string,
  bytes: number,
): Promise<{ seconds: number; rssKiB: number }> {
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
  await fsp.rm(dir, { recursive: true, force: true });
  return { seconds, rssKiB: Number(/ferry-bench-max-rss-kib (\d+)/.exec(err)?.[1] ?? 'NaN') };
}

export async function benchPublisher(endpoint: string, bytes = GiB): Promise<PublisherBench> {
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferry-wrapper-'));
  const wrapper = path.join(work, 'ferry-wrapper');
  execFileSync('gcc', ['-static', '-O2', '-o', wrapper, 'runner/wrapper/ferry-wrapper.c']);
  const bundle = path.join(work, 'publisher.mjs');
  execFileSync(process.execPath, ['scripts/bundle-publisher.mjs', bundle]);

  const bucket = `ferry-bench-${Date.now()}`;
  const s3 = new S3Client({
    region: 'us-east-1',
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  s3.destroy();

  const raw: number[] = [];
  const published: { seconds: number; rssKiB: number }[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    raw.push(await rawRound(wrapper, bytes));
    published.push(await publisherRound(wrapper, bundle, endpoint, bucket, bytes));
  }
  await fsp.rm(work, { recursive: true, force: true });
  const rawSeconds = median(raw);
  const seconds = median(published.map((p) => p.seconds));
  const mib = bytes / 1024 ** 2;
  return {
    bytes,
    rawMiBps: mib / rawSeconds,
    publisherMiBps: mib / seconds,
    ratio: rawSeconds / seconds,
    peakRssMiB: Math.max(...published.map((p) => p.rssKiB)) / 1024,
    storedBytes: 10 * 1024 * 1024,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const endpoint = process.argv[2];
  if (endpoint === undefined) throw new Error('usage: node --import tsx bench/publisher.ts <s3-endpoint>');
  console.log(await benchPublisher(endpoint));
}
