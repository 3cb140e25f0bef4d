// Prepares what the suites need from the machine: a Docker Engine, the offline test image and
// the AWS API emulators. Under CI=true a missing engine is an error, never a reason to skip.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import Docker from 'dockerode';
import type { TestProject } from 'vitest/node';
import { startLocalStack } from './support/localstack.ts';
import { startMoto } from './support/moto.ts';

export const TEST_IMAGE = 'ferry-test:busybox';

/** The services the suites call, by the name the AWS SDK gives each its endpoint variable. */
export const AWS_SERVICES = ['dynamodb', 'ecs', 'ec2', 's3', 'sqs', 'eventbridge'] as const;
export type AwsService = (typeof AWS_SERVICES)[number];

/** What FERRY_TEST_AWS=localstack moves from moto to LocalStack; the rest stays on moto. */
const ON_LOCALSTACK: readonly AwsService[] = ['s3', 'sqs', 'eventbridge'];

declare module 'vitest' {
  export interface ProvidedContext {
    dockerAvailable: boolean;
    testImage: string;
    /** Where the AWS API emulator answers (moto server, or the one AWS_ENDPOINT_URL names). */
    awsEndpoint: string;
    /** 'moto' when the suite started its own moto server; 'external' when AWS_ENDPOINT_URL was given. */
    awsEmulator: 'moto' | 'external';
    /**
     * Services that answer elsewhere than awsEndpoint: LocalStack's under FERRY_TEST_AWS=localstack,
     * or what AWS_ENDPOINT_URL_<SERVICE> names (AWS_ENDPOINT_URL_S3, …_SQS, …_EVENTBRIDGE, …).
     */
    awsServiceEndpoints: Partial<Record<AwsService, string>>;
  }
}

const given = (name: string): string | undefined => {
  const value = process.env[name];
  return value === undefined || value === '' ? undefined : value;
};

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const docker = new Docker();
  let available = false;
  try {
    await docker.ping();
    available = true;
  } catch (error) {
    if (process.env.CI === 'true') {
      throw new Error(
        `CI=true but no Docker Engine answers (${(error as Error).message}); .ci/run must start dockerd`,
      );
    }
    console.warn('[ferry tests] no Docker Engine: the Docker backend suites will be skipped');
  }
  if (available) {
    try {
      await docker.getImage(TEST_IMAGE).inspect();
    } catch {
      execFileSync('bash', [path.resolve('scripts/build-test-image.sh'), TEST_IMAGE], { stdio: 'inherit' });
    }
  }
  project.provide('dockerAvailable', available);
  project.provide('testImage', TEST_IMAGE);

  const choice = process.env.FERRY_TEST_AWS ?? 'moto';
  if (choice !== 'moto' && choice !== 'localstack') {
    throw new Error(`FERRY_TEST_AWS=${choice}: expected moto (the default) or localstack`);
  }
  const endpoints: Partial<Record<AwsService, string>> = {};
  for (const service of AWS_SERVICES) {
    const named = given(`AWS_ENDPOINT_URL_${service.toUpperCase()}`);
    if (named !== undefined) endpoints[service] = named;
  }
  const external = given('AWS_ENDPOINT_URL');
  const started = await Promise.allSettled([
    external === undefined ? startMoto() : undefined,
    choice === 'localstack' ? startLocalStack() : undefined,
  ]);
  const [moto, localstack] = started.map((s) => (s.status === 'fulfilled' ? s.value : undefined));
  const teardown = async () => {
    await Promise.all([moto?.stop(), localstack?.stop()]);
  };
  const failed = started.find((s) => s.status === 'rejected');
  if (failed !== undefined) {
    await teardown();
    throw failed.reason;
  }
  if (localstack !== undefined) {
    for (const service of ON_LOCALSTACK) endpoints[service] = localstack.endpoint;
  }
  project.provide('awsServiceEndpoints', endpoints);
  project.provide('awsEndpoint', moto?.endpoint ?? external ?? '');
  project.provide('awsEmulator', moto === undefined ? 'external' : 'moto');
  return teardown;
}
