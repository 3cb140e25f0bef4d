// A task's STOPPED event lost between ECS and Ferry: the sweeper finds the task stopped through
// DescribeTasks and ends the execution as the event would have, on the emulator's ECS.
import { StopTaskCommand } from '@aws-sdk/client-ecs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Core } from '../../shared/core.ts';
import { silentLogger } from '../../shared/logger.ts';
import { buildAwsCore } from '../../shared/runtime/aws.ts';
import { submitJob } from '../../shared/use-cases/bids.ts';
import { dispatch } from '../../shared/use-cases/dispatch.ts';
import { sweep } from '../../shared/use-cases/sweep.ts';
import { handleTaskStateChange } from '../../shared/use-cases/task-events.ts';
import { type AwsEnvironment, awsConfig, createAwsEnvironment, publishResult } from '../support/aws.ts';

const job = {
  image: 'public.ecr.aws/docker/library/alpine:3.20',
  command: ['sh', '-c', 'exit 3'],
  resources: { cpu: 1, memory: '3GiB' },
};

describe('a lost STOPPED event on AWS (emulated)', () => {
  let aws: AwsEnvironment;

  beforeAll(async () => {
    aws = await createAwsEnvironment();
  });

  it('is made up by the sweeper from DescribeTasks, releasing the capacity', async () => {
    const now = { value: new Date() };
    const core: Core = {
      ...buildAwsCore(awsConfig(aws), aws.clients, silentLogger),
      clock: { now: () => now.value },
    };
    const execution = await submitJob(core, 'arn:aws:iam::123456789012:user/alice', job);
    expect(await dispatch(core, { executionId: execution.id })).toMatchObject({ outcome: 'launched' });
    const taskArn = (await core.store.get(execution.id))?.task?.id ?? '';
    await handleTaskStateChange(core, {
      taskArn,
      startedBy: execution.id,
      lastStatus: 'RUNNING',
      version: 2,
      startedAt: now.value.toISOString(),
    });
    expect(await core.ledger.holders()).toEqual([execution.id]);

    // The job ends and its result is stored; ECS reports the task STOPPED, the event never comes.
    await publishResult(aws, execution.id, '', 3);
    await aws.clients.ecs.send(
      new StopTaskCommand({
        cluster: aws.cluster,
        task: taskArn,
        reason: 'Essential container in task exited',
      }),
    );

    expect(await sweep(core)).toMatchObject({ lostStopEvents: 0, lostTasks: 0 });
    expect((await core.store.get(execution.id))?.state).toBe('RUNNING');
    now.value = new Date(now.value.getTime() + 60_000);
    expect(await sweep(core)).toMatchObject({ lostStopEvents: 1 });

    expect(await core.store.get(execution.id)).toMatchObject({
      state: 'COMPLETED',
      exitCode: 3,
      result: { exitCode: 3 },
    });
    expect(await core.ledger.holders()).toEqual([]);
  });
});
