// A result S3 will not let Ferry read. On AWS a missing key answers 403 to a role without
// s3:ListBucket; the emulator enforces no IAM, so S3's answer is given here. The read must say
// what is wrong, and the run must still end and give its capacity back.
import { S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { beforeAll, describe, expect, it } from 'vitest';
import { S3ObjectStore } from '../../shared/adapters/aws/s3-object-store.ts';
import type { Core } from '../../shared/core.ts';
import { StorageAccessDenied } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import { buildAwsCore } from '../../shared/runtime/aws.ts';
import { submitJob } from '../../shared/use-cases/bids.ts';
import { dispatch } from '../../shared/use-cases/dispatch.ts';
import { handleTaskStateChange } from '../../shared/use-cases/task-events.ts';
import { type AwsEnvironment, awsConfig, clientConfig, createAwsEnvironment } from '../support/aws.ts';
import { FaultInjector } from '../support/sdk-faults.ts';

const accessDenied = () => ({
  throws: new S3ServiceException({
    name: 'AccessDenied',
    $fault: 'client',
    message: 'Access Denied',
    $metadata: { httpStatusCode: 403, attempts: 1, totalRetryDelay: 0 },
  }),
});

const job = {
  image: 'public.ecr.aws/docker/library/alpine:3.20',
  command: ['true'],
  resources: { cpu: 1, memory: '3GiB' },
};

describe('a result S3 refuses to read', () => {
  let aws: AwsEnvironment;
  let s3: S3Client;

  beforeAll(async () => {
    aws = await createAwsEnvironment();
    s3 = new S3Client(clientConfig('s3'));
    new FaultInjector(s3).always('GetObject', accessDenied());
  });

  it('is an error that names the missing permission, not a crash of the SDK', async () => {
    const store = new S3ObjectStore(aws.bucket, s3);
    const read = store.get('executions/x/result.json');
    await expect(read).rejects.toBeInstanceOf(StorageAccessDenied);
    await expect(read).rejects.toThrow(/s3:ListBucket .*executions\/.*s3:GetObject/);
  });

  it('ends the run FAILED with the reason and releases its capacity', async () => {
    const core: Core = buildAwsCore(awsConfig(aws), { ...aws.clients, s3 }, silentLogger);
    const execution = await submitJob(core, 'arn:aws:iam::123456789012:user/alice', job);
    await dispatch(core, { executionId: execution.id });
    const taskArn = (await core.store.get(execution.id))?.task?.id ?? '';
    expect(await core.ledger.holders()).toEqual([execution.id]);

    await handleTaskStateChange(core, {
      taskArn,
      startedBy: execution.id,
      lastStatus: 'STOPPED',
      stopCode: 'EssentialContainerExited',
      containers: [{ name: 'job', lastStatus: 'STOPPED', exitCode: 0 }],
      version: 3,
    });

    const final = await core.store.get(execution.id);
    expect(final?.state).toBe('FAILED');
    expect(final?.reason).toMatch(/^the result could not be read: reading s3:\/\/.* was denied/);
    expect(await core.ledger.holders()).toEqual([]);
  });
});
