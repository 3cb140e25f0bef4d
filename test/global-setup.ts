// Prepares what the suites need from the machine: a Docker Engine and the offline test
// image. Under CI=true a missing engine is an error, never a reason to skip.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import Docker from 'dockerode';
import type { TestProject } from 'vitest/node';
import { startMoto } from './support/moto.ts';

export const TEST_IMAGE = 'ferry-test:busybox';

declare module 'vitest' {
  export interface ProvidedContext {
    dockerAvailable: boolean;
    testImage: string;
    /** Where the AWS API emulator answers (moto server, or LocalStack via AWS_ENDPOINT_URL). */
    awsEndpoint: string;
    /** 'moto' when the suite started its own moto server; 'external' when AWS_ENDPOINT_URL was given. */
    awsEmulator: 'moto' | 'external';
  }
}

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

  const external = process.env.AWS_ENDPOINT_URL;
  if (external !== undefined && external !== '') {
    project.provide('awsEndpoint', external);
    project.provide('awsEmulator', 'external');
    return async () => undefined;
  }
  const moto = await startMoto();
  project.provide('awsEndpoint', moto.endpoint);
  project.provide('awsEmulator', 'moto');
  return moto.stop;
}
