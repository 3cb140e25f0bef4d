// The Fargate task's anatomy, run for real with Docker against the emulated AWS: the init
// container hands the static wrapper over a shared volume, the job's image (one static
// program, no shell) runs through it, and the publisher stores the result in S3 through
// upload links it asks Ferry's API for, as the task role (which may not write to S3), with the
// upload secret the dispatcher's RunTask gave it.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { EmulatedHttpApi } from '../../shared/adapters/emulated/http-api.ts';
import type { Core } from '../../shared/core.ts';
import type { ResultManifest } from '../../shared/domain/execution.ts';
import { silentLogger } from '../../shared/logger.ts';
import { buildAwsCore } from '../../shared/runtime/aws.ts';
import { serveApi, TASK_KEY } from '../support/api-front.ts';
import { type AwsEnvironment, awsConfig, createAwsEnvironment, launchOnEcs, REGION } from '../support/aws.ts';

// Named after this checkout, so two checkouts sharing one Docker Engine never run each other's publisher.
const RUNNER = `ferry-runner:test-${createHash('sha256').update(process.cwd()).digest('hex').slice(0, 8)}`;
const JOB = 'ferry-testjob:noshell';
const docker = new Docker();

if (!inject('dockerAvailable') && process.env.CI === 'true') {
  throw new Error('CI=true but no Docker Engine: the task anatomy cannot be proven');
}

interface Run {
  readonly executionId: string;
  readonly jobExit: number;
  readonly manifest: ResultManifest;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  readonly publisherLog: string;
}

let aws: AwsEnvironment;
let core: Core;
let api: EmulatedHttpApi;
/** Requests for upload links that reached the api handler. */
const linkRequests = { calls: 0 };

async function object(key: string): Promise<Buffer> {
  const reply = await aws.clients.s3.send(new GetObjectCommand({ Bucket: aws.bucket, Key: key }));
  return Buffer.from(await (reply.Body?.transformToByteArray() ?? Promise.resolve(new Uint8Array())));
}

async function runContainer(options: Docker.ContainerCreateOptions): Promise<{ exit: number; log: string }> {
  const container = await docker.createContainer(options);
  await container.start();
  const { StatusCode } = (await container.wait()) as { StatusCode: number };
  const log = (await container.logs({ stdout: true, stderr: true })).toString('utf8');
  await container.remove({ force: true });
  return { exit: StatusCode, log };
}

/** Runs one job the way its Fargate task would, with `docker` instead of ECS. */
async function runTask(
  argv: string[],
  options: { limits: object; timeoutSeconds?: number; stopAfterMs?: number; workdir?: string },
): Promise<Run> {
  // Launched by the dispatcher (on the emulator's ECS): the record holds the secret's digest,
  // and RunTask's overrides carry what the publisher container is given.
  const { executionId, publisherEnvironment } = await launchOnEcs(aws, core, {
    image: 'public.ecr.aws/docker/library/alpine:3.20',
    command: argv,
    outputLimits: options.limits,
    timeoutSeconds: options.timeoutSeconds ?? 60,
  });
  const volume = `ferry-${executionId}`;
  await docker.createVolume({ Name: volume });
  const mount = { HostConfig: { Binds: [`${volume}:/ferry`] } };
  try {
    const init = await runContainer({
      Image: RUNNER,
      Entrypoint: ['/opt/ferry/ferry-wrapper'],
      Cmd: ['--init', '/ferry'],
      ...mount,
    });
    expect(init.exit).toBe(0);

    const publisher = await docker.createContainer({
      Image: RUNNER,
      Env: [
        // From RunTask's overrides: the execution, its limits, its upload secret.
        ...Object.entries(publisherEnvironment).map(([name, value]) => `${name}=${value}`),
        // From the task definition, with the API a loopback front instead of API Gateway.
        `FERRY_API_URL=${api.url}`,
        'FERRY_IO_DIR=/ferry/io',
        'FERRY_STOP_GRACE_SECONDS=2',
        // The task role's credentials, which the publisher finds through the standard chain.
        `AWS_ACCESS_KEY_ID=${TASK_KEY.accessKeyId}`,
        `AWS_SECRET_ACCESS_KEY=${TASK_KEY.secretAccessKey}`,
        `AWS_REGION=${REGION}`,
      ],
      HostConfig: { Binds: [`${volume}:/ferry`], NetworkMode: 'host' },
    });
    await publisher.start();

    const job = await docker.createContainer({
      Image: JOB,
      Entrypoint: ['/ferry/bin/ferry-wrapper'],
      Cmd: [
        '--io',
        '/ferry/io',
        '--timeout',
        String(options.timeoutSeconds ?? 60),
        '--grace',
        '1',
        ...(options.workdir === undefined ? [] : ['--workdir', options.workdir]),
        '--',
        ...argv,
      ],
      NetworkDisabled: true,
      ...mount,
    });
    await job.start();
    if (options.stopAfterMs !== undefined) {
      // What StopTask does: SIGTERM to every container of the task.
      await new Promise((resolve) => setTimeout(resolve, options.stopAfterMs));
      await Promise.all([job.kill({ signal: 'SIGTERM' }), publisher.kill({ signal: 'SIGTERM' })]);
    }
    const { StatusCode: jobExit } = (await job.wait()) as { StatusCode: number };
    await publisher.wait();
    const publisherLog = (await publisher.logs({ stdout: true, stderr: true })).toString('utf8');
    await Promise.all([job.remove({ force: true }), publisher.remove({ force: true })]);

    const manifest = JSON.parse(
      (await object(`executions/${executionId}/result.json`)).toString(),
    ) as ResultManifest;
    return {
      executionId,
      jobExit,
      manifest,
      stdout: await object(`executions/${executionId}/stdout`),
      stderr: await object(`executions/${executionId}/stderr`),
      publisherLog,
    };
  } finally {
    await docker
      .getVolume(volume)
      .remove({ force: true })
      .catch(() => undefined);
  }
}

/** Bytes the test job writes for `out N`: byte i is i % 256. */
const pattern = (from: number, length: number) =>
  Buffer.from(Array.from({ length }, (_, i) => (from + i) % 256));

describe.skipIf(!inject('dockerAvailable'))('Fargate task anatomy (Docker + emulated S3)', () => {
  beforeAll(async () => {
    execFileSync('bash', ['scripts/build-runner-image.sh', RUNNER], { stdio: 'inherit' });
    execFileSync('bash', ['scripts/build-testjob-image.sh', JOB], { stdio: 'inherit' });
    aws = await createAwsEnvironment();
    core = buildAwsCore(awsConfig(aws), aws.clients, silentLogger);
    api = await serveApi(core, linkRequests);
  }, 180_000);

  afterAll(() => api?.close());

  it('captures stdout, stderr and the exit code of an image without a shell', async () => {
    const before = linkRequests.calls;
    const run = await runTask(['/testjob', 'line', 'hello', 'err', 'oops', 'exit', '3'], {
      limits: { stdoutBytes: 1024, stderrBytes: 1024, inlineBytes: 256, keep: 'head+tail' },
    });

    expect(run.jobExit).toBe(3);
    // Stored through links: the streams, result.json, the live windows' removal.
    expect(linkRequests.calls - before).toBeGreaterThanOrEqual(4);
    expect(run.stdout.toString()).toBe('hello\n');
    expect(run.stderr.toString()).toBe('oops\n');
    expect(run.manifest).toMatchObject({
      executionId: run.executionId,
      exitCode: 3,
      signal: null,
      partial: false,
      stdout: { totalBytes: 6, storedBytes: 6, truncated: false, inline: 'hello\n', inlineEncoding: 'utf8' },
      stderr: { totalBytes: 5, truncated: false, inline: 'oops\n' },
    });
    // The live window is a working file: gone once the result is complete.
    const listed = await aws.clients.s3.send(
      new ListObjectsV2Command({ Bucket: aws.bucket, Prefix: `executions/${run.executionId}/` }),
    );
    expect(listed.Contents?.map((o) => o.Key?.split('/').slice(2).join('/')).sort()).toEqual([
      'result.json',
      'stderr',
      'stdout',
    ]);
  });

  it('keeps head and tail byte-exact under the limit, with totals and truncation flags', async () => {
    const total = 3_000_000;
    const run = await runTask(['/testjob', 'out', String(total)], {
      limits: { stdoutBytes: 10_000, stderrBytes: 1024, inlineBytes: 64, keep: 'head+tail' },
    });

    expect(run.manifest.exitCode).toBe(0);
    expect(run.manifest.stdout).toMatchObject({
      totalBytes: total,
      truncated: true,
      // The 32-byte marker counts inside the limit: 4,984 bytes on each side of it.
      storedBytes: 10_000,
      headBytes: 4_984,
      tailBytes: 4_984,
      omittedBytes: total - 9_968,
      inlineEncoding: 'base64',
      inlineTruncated: true,
    });
    const marker = Buffer.from(`\n[ferry: ${total - 9_968} bytes omitted]\n`);
    expect(run.stdout.equals(Buffer.concat([pattern(0, 4_984), marker, pattern(total - 4_984, 4_984)]))).toBe(
      true,
    );
    expect(run.manifest.stderr).toMatchObject({ totalBytes: 0, truncated: false });
  });

  it('reports a program the image does not have', async () => {
    const run = await runTask(['/no-such-program'], {
      limits: { stdoutBytes: 1024, stderrBytes: 1024, inlineBytes: 256, keep: 'tail' },
    });

    expect(run.jobExit).toBe(127);
    expect(run.manifest.exitCode).toBe(127);
    expect(run.stderr.toString()).toContain('cannot run /no-such-program: No such file or directory');
  });

  it('runs the job in its workdir, made when the image lacks it, as docker run -w does', async () => {
    const run = await runTask(['/testjob', 'pwd', '-'], {
      limits: { stdoutBytes: 1024, stderrBytes: 1024, inlineBytes: 256, keep: 'tail' },
      workdir: '/data/work',
    });

    expect(run.jobExit).toBe(0);
    expect(run.stdout.toString()).toBe('/data/work\n');
  });

  it('does not start a job whose workdir cannot be made, and says why', async () => {
    const run = await runTask(['/testjob', 'line', 'ran'], {
      limits: { stdoutBytes: 1024, stderrBytes: 1024, inlineBytes: 256, keep: 'tail' },
      workdir: '/testjob/below-a-file',
    });

    expect(run.jobExit).toBe(125);
    expect(run.stdout.toString()).toBe('');
    expect(run.stderr.toString()).toContain(
      'cannot enter the working directory /testjob/below-a-file: Not a directory',
    );
  });

  it('stops a job at its timeout inside the task and keeps what it wrote', async () => {
    const run = await runTask(['/testjob', 'line', 'started', 'sleep', '60', 'line', 'never'], {
      limits: { stdoutBytes: 1024, stderrBytes: 1024, inlineBytes: 256, keep: 'head' },
      timeoutSeconds: 2,
    });

    expect(run.manifest).toMatchObject({ timedOut: true, partial: true, signal: 'SIGTERM', exitCode: 143 });
    expect(run.stdout.toString()).toBe('started\n');
  });

  it('still stores what was captured when the task is stopped', async () => {
    const run = await runTask(['/testjob', 'line', 'working', 'sleep', '60'], {
      limits: { stdoutBytes: 1024, stderrBytes: 1024, inlineBytes: 256, keep: 'tail' },
      stopAfterMs: 1500,
    });

    expect(run.manifest).toMatchObject({ partial: true, signal: 'SIGTERM' });
    expect(run.stdout.toString()).toBe('working\n');
    expect(run.publisherLog).toContain('stop requested');
  });
});
