// `ferry emulate aws` as a user runs it: it synthesizes the stack, starts it on moto with real
// containers, prints the API and a caller's keys, takes a signed job to the end, and stops on
// Ctrl-C with nothing refused by IAM.
import { spawn } from 'node:child_process';
import { expect, inject, it } from 'vitest';
import { FerryClient, sigv4Signer } from '../../cli/client.ts';
import type { Execution } from '../../shared/domain/execution.ts';

if (!inject('dockerAvailable') && process.env.CI === 'true') {
  throw new Error('CI=true but no Docker Engine: `ferry emulate aws` cannot run tasks');
}

it.skipIf(!inject('dockerAvailable'))(
  'runs the synthesized stack until Ctrl-C and takes a signed job to the end',
  async () => {
    // The user's environment, with S3, SQS and EventBridge on LocalStack when the suite is.
    const services = inject('awsServiceEndpoints');
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
    if (services.s3 !== undefined) env.AWS_ENDPOINT_URL_S3 = services.s3;
    if (services.sqs !== undefined) env.AWS_ENDPOINT_URL_SQS = services.sqs;
    if (services.eventbridge !== undefined) env.AWS_ENDPOINT_URL_EVENTBRIDGE = services.eventbridge;
    const child = spawn(process.execPath, ['bin/ferry.js', 'emulate', 'aws'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const deadline = Date.now() + 150_000;
      while (!out.includes('Ctrl-C')) {
        if (child.exitCode !== null || Date.now() > deadline)
          throw new Error(`emulate did not start:\n${err}`);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      const value = (name: string) => new RegExp(`export ${name}=(\\S+)`).exec(out)?.[1] ?? '';
      const client = new FerryClient(
        value('FERRY_URL'),
        undefined,
        sigv4Signer({
          region: 'us-east-1',
          credentials: {
            accessKeyId: value('AWS_ACCESS_KEY_ID'),
            secretAccessKey: value('AWS_SECRET_ACCESS_KEY'),
          },
        }),
      );
      const submitted = await client.json<Execution>('POST', '/v1/jobs', {
        image: inject('testImage'),
        command: ['sh', '-c', 'echo emulated; exit 5'],
      });
      const done = await client.json<Execution>(
        'GET',
        `/v1/executions/${submitted.body.id}/wait?timeoutSeconds=25`,
      );
      expect(done.body).toMatchObject({ state: 'COMPLETED', exitCode: 5 });
      const stdout = await client.bytes(`/v1/executions/${submitted.body.id}/logs?stream=stdout`);
      expect(stdout.body.toString()).toBe('emulated\n');
    } finally {
      child.kill('SIGINT');
    }
    expect(await exited).toBe(0);
    expect(err).toMatch(/stopping; \d+ AWS calls made, 0 refused by IAM/);
    if (services.s3 !== undefined) expect(err).toContain(`s3 calls go to ${services.s3}`);
  },
  240_000,
);
