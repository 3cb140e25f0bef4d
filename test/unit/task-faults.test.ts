// How a task's end is read when ECS reports something other than a plain exit, and the
// orderings of writes that must still leave a run with a deadline.

import { describe, expect, it } from 'vitest';
import type { TaskStateChangeDetail } from '../../shared/domain/task-event.ts';
import { StorageAccessDenied } from '../../shared/errors.ts';
import { submitJob } from '../../shared/use-cases/bids.ts';
import { dispatch } from '../../shared/use-cases/dispatch.ts';
import { sweep } from '../../shared/use-cases/sweep.ts';
import { handleTaskStateChange } from '../../shared/use-cases/task-events.ts';
import { buildTestCore } from '../support/core.ts';

const OWNER = 'owner-a';
const job = { image: 'alpine:3', command: ['true'], timeoutSeconds: 60 };

function event(id: string, version: number, lastStatus: string, extra: Partial<TaskStateChangeDetail> = {}) {
  return { taskArn: `task/${id}`, startedBy: id, version, lastStatus, ...extra };
}

describe('Fargate Spot interruptions', () => {
  it.each(['SpotInterruption', 'TerminationNotice'])(
    'end FAILED on %s, not COMPLETED with 143',
    async (stopCode) => {
      const { core } = await buildTestCore();
      const execution = await submitJob(core, OWNER, job);
      await dispatch(core, { executionId: execution.id });
      await handleTaskStateChange(core, event(execution.id, 2, 'RUNNING'));
      await handleTaskStateChange(
        core,
        event(execution.id, 3, 'STOPPED', {
          stopCode,
          stoppedReason: 'Your Spot Task was interrupted.',
          containers: [{ name: 'job', exitCode: 143 }],
        }),
      );
      const final = await core.store.get(execution.id);
      expect(final).toMatchObject({ state: 'FAILED', exitCode: 143 });
      expect(final?.reason).toBe(
        `the Fargate Spot capacity was reclaimed (${stopCode}): Your Spot Task was interrupted.`,
      );
      expect(await core.ledger.holders()).toEqual([]);
    },
  );
});

describe('races between the dispatcher and the task events', () => {
  it('sets the deadline when an early task event is written before the dispatcher records the task', async () => {
    const { core, backend, now } = await buildTestCore();
    const execution = await submitJob(core, OWNER, { ...job, timeoutSeconds: 5 });
    backend.duringLaunch = async () => {
      await handleTaskStateChange(core, event(execution.id, 1, 'PENDING'));
    };
    await dispatch(core, { executionId: execution.id });
    const launched = await core.store.get(execution.id);
    expect(launched?.task?.id).toBe(`task/${execution.id}`);
    expect(launched?.deadlineAt).toBeDefined();

    // The RUNNING event is lost: the sweeper still stops the run once the deadline (with the
    // launch grace) has passed.
    now.value = new Date(now.value.getTime() + (5 + 120 + 1) * 1000);
    expect(await sweep(core)).toMatchObject({ timedOut: 1 });
    expect(backend.stopped).toEqual([`task/${execution.id}`]);
  });

  it('counts the deadline from the start when RUNNING is written before the dispatcher', async () => {
    const { core, backend, now } = await buildTestCore();
    const execution = await submitJob(core, OWNER, { ...job, timeoutSeconds: 5 });
    const startedAt = now.value.toISOString();
    backend.duringLaunch = async () => {
      await handleTaskStateChange(core, event(execution.id, 2, 'RUNNING', { startedAt }));
    };
    await dispatch(core, { executionId: execution.id });
    expect(await core.store.get(execution.id)).toMatchObject({
      state: 'RUNNING',
      deadlineAt: new Date(Date.parse(startedAt) + 5000).toISOString(),
    });
  });

  it('does not mark TIMED_OUT a job that ended by itself exactly at its deadline', async () => {
    const { core, backend, now } = await buildTestCore();
    const execution = await submitJob(core, OWNER, { ...job, timeoutSeconds: 5 });
    await dispatch(core, { executionId: execution.id });
    const startedAt = now.value.toISOString();
    await handleTaskStateChange(core, event(execution.id, 2, 'RUNNING', { startedAt }));

    // The job exits at its deadline; the sweeper runs before the stop event arrives.
    now.value = new Date(now.value.getTime() + 5000);
    expect(await sweep(core)).toMatchObject({ timedOut: 1 });
    expect(backend.stopped).toEqual([`task/${execution.id}`]);
    await handleTaskStateChange(
      core,
      event(execution.id, 3, 'STOPPED', {
        stopCode: 'EssentialContainerExited',
        stoppedAt: now.value.toISOString(),
        containers: [{ name: 'job', exitCode: 0 }],
      }),
    );
    expect(await core.store.get(execution.id)).toMatchObject({ state: 'COMPLETED', exitCode: 0 });
  });

  it('still marks TIMED_OUT a job the timeout stopped', async () => {
    const { core, now } = await buildTestCore();
    const execution = await submitJob(core, OWNER, { ...job, timeoutSeconds: 5 });
    await dispatch(core, { executionId: execution.id });
    await handleTaskStateChange(
      core,
      event(execution.id, 2, 'RUNNING', { startedAt: now.value.toISOString() }),
    );
    now.value = new Date(now.value.getTime() + 6000);
    await sweep(core);
    await handleTaskStateChange(
      core,
      event(execution.id, 3, 'STOPPED', {
        stopCode: 'UserInitiated',
        containers: [{ name: 'job', exitCode: 143 }],
      }),
    );
    expect(await core.store.get(execution.id)).toMatchObject({
      state: 'TIMED_OUT',
      reason: 'exceeded its timeout of 5s',
    });
  });
});

describe('a lost stop event', () => {
  it('is made up by the sweeper from what the backend says, on the pass after the one that saw it', async () => {
    const { core, backend, now } = await buildTestCore();
    const spot = await submitJob(core, OWNER, job);
    const exited = await submitJob(core, OWNER, job);
    for (const execution of [spot, exited]) {
      await dispatch(core, { executionId: execution.id });
      await handleTaskStateChange(core, event(execution.id, 2, 'RUNNING'));
      backend.tasks.set(`task/${execution.id}`, 'STOPPED');
    }
    backend.stopDetails.set(`task/${spot.id}`, {
      stopCode: 'SpotInterruption',
      stoppedReason: 'Your Spot Task was interrupted.',
      containers: [{ name: 'job', exitCode: 143 }],
    });
    backend.stopDetails.set(`task/${exited.id}`, {
      stopCode: 'EssentialContainerExited',
      containers: [{ name: 'job', exitCode: 3 }],
    });

    // The first pass only notes it: the event may be on its way.
    expect(await sweep(core)).toMatchObject({ lostStopEvents: 0 });
    expect((await core.store.get(spot.id))?.state).toBe('RUNNING');
    now.value = new Date(now.value.getTime() + 10_000);
    expect(await sweep(core)).toMatchObject({ lostStopEvents: 0 });

    now.value = new Date(now.value.getTime() + 60_000);
    expect(await sweep(core)).toMatchObject({ lostStopEvents: 2 });
    expect(await core.store.get(spot.id)).toMatchObject({
      state: 'FAILED',
      reason: 'the Fargate Spot capacity was reclaimed (SpotInterruption): Your Spot Task was interrupted.',
    });
    expect(await core.store.get(exited.id)).toMatchObject({ state: 'COMPLETED', exitCode: 3 });
    expect(await core.ledger.holders()).toEqual([]);

    // The real event, arriving at last, changes nothing.
    expect(
      await handleTaskStateChange(
        core,
        event(exited.id, 3, 'STOPPED', { containers: [{ name: 'job', exitCode: 0 }] }),
      ),
    ).toBe('ignored');
  });

  it('is not made up when the event comes within the grace', async () => {
    const { core, backend, now } = await buildTestCore();
    const execution = await submitJob(core, OWNER, job);
    await dispatch(core, { executionId: execution.id });
    await handleTaskStateChange(core, event(execution.id, 2, 'RUNNING'));
    backend.tasks.set(`task/${execution.id}`, 'STOPPED');
    await sweep(core);
    await handleTaskStateChange(
      core,
      event(execution.id, 3, 'STOPPED', {
        stopCode: 'EssentialContainerExited',
        containers: [{ name: 'job', exitCode: 7 }],
      }),
    );
    now.value = new Date(now.value.getTime() + 60_000);
    expect(await sweep(core)).toMatchObject({ lostStopEvents: 0 });
    expect(await core.store.get(execution.id)).toMatchObject({ state: 'COMPLETED', exitCode: 7 });
  });
});

describe('a result that cannot be read', () => {
  it('does not keep a lost task running: the sweeper ends it FAILED and releases its capacity', async () => {
    const { core, backend } = await buildTestCore();
    const execution = await submitJob(core, OWNER, job);
    await dispatch(core, { executionId: execution.id });
    await handleTaskStateChange(core, event(execution.id, 2, 'RUNNING'));
    backend.tasks.delete(`task/${execution.id}`);
    const denied = {
      ...core.objects,
      get: async () => {
        throw new StorageAccessDenied('reading executions/x/result.json was denied');
      },
    };

    expect(await sweep({ ...core, objects: denied })).toMatchObject({ lostTasks: 1, skipped: 0 });
    expect(await core.store.get(execution.id)).toMatchObject({
      state: 'FAILED',
      reason: 'the result could not be read: reading executions/x/result.json was denied',
    });
    expect(await core.ledger.holders()).toEqual([]);
  });
});

/** A stream that printed nothing, as a manifest records it. */
const emptyStream = {
  totalBytes: 0,
  storedBytes: 0,
  truncated: false,
  headBytes: 0,
  tailBytes: 0,
  omittedBytes: 0,
  inline: '',
  inlineEncoding: 'utf8',
  inlineTruncated: false,
};

describe('a job of steps on Fargate', () => {
  const steps = {
    steps: [
      { image: 'alpine:3', command: ['false'], ignoreError: true },
      { image: 'busybox:1', command: ['true'] },
    ],
    timeoutSeconds: 60,
  };
  const manifest = (id: string, results: { exitCode: number | null }[], exitCode: number) => ({
    executionId: id,
    exitCode,
    signal: null,
    partial: false,
    startedAt: '2026-01-01T00:00:00.000Z',
    endedAt: '2026-01-01T00:00:10.000Z',
    stdout: emptyStream,
    stderr: emptyStream,
    outputs: [],
    keep: 'head+tail',
    steps: results.map((r, i) => ({
      ...r,
      signal: null,
      startedAt: null,
      endedAt: '2026-01-01T00:00:05.000Z',
      stdoutFrom: i,
      stderrFrom: 0,
    })),
  });

  it('runs once its first step runs, though ECS reports the task PENDING while later steps wait', async () => {
    const { core } = await buildTestCore();
    const execution = await submitJob(core, OWNER, steps);
    await dispatch(core, { executionId: execution.id });
    await handleTaskStateChange(
      core,
      event(execution.id, 2, 'PENDING', {
        containers: [
          { name: 'ferry-init', lastStatus: 'STOPPED', exitCode: 0 },
          { name: 'job', lastStatus: 'PENDING' },
          { name: 'job-step2', lastStatus: 'PENDING' },
          { name: 'ferry-publisher', lastStatus: 'RUNNING' },
        ],
      }),
    );
    expect((await core.store.get(execution.id))?.state).toBe('LAUNCHING');
    await handleTaskStateChange(
      core,
      event(execution.id, 3, 'PENDING', {
        containers: [
          { name: 'ferry-init', lastStatus: 'STOPPED', exitCode: 0 },
          { name: 'job', lastStatus: 'RUNNING' },
          { name: 'job-step2', lastStatus: 'PENDING' },
          { name: 'ferry-publisher', lastStatus: 'RUNNING' },
        ],
      }),
    );
    const running = await core.store.get(execution.id);
    expect(running?.state).toBe('RUNNING');
    // The deadline counts from the first step, so the sweeper's backstop is not late.
    expect(running?.deadlineAt).toBeDefined();
  });

  it('is not failed for memory by a step whose failure was ignored', async () => {
    const { core } = await buildTestCore();
    const execution = await submitJob(core, OWNER, steps);
    await dispatch(core, { executionId: execution.id });
    await core.objects.put(
      `executions/${execution.id}/result.json`,
      JSON.stringify(manifest(execution.id, [{ exitCode: 137 }, { exitCode: 0 }], 0)),
      'application/json',
    );
    await handleTaskStateChange(
      core,
      event(execution.id, 3, 'STOPPED', {
        stopCode: 'EssentialContainerExited',
        containers: [
          {
            name: 'job',
            lastStatus: 'STOPPED',
            exitCode: 137,
            reason: 'OutOfMemoryError: Container killed due to memory usage',
          },
          { name: 'job-step2', lastStatus: 'STOPPED', exitCode: 0 },
          { name: 'ferry-publisher', lastStatus: 'STOPPED', exitCode: 0 },
        ],
      }),
    );
    expect(await core.store.get(execution.id)).toMatchObject({ state: 'COMPLETED', exitCode: 0 });
  });

  it('stops a task whose later step cannot start, and ends it FAILED saying why', async () => {
    const { core, backend } = await buildTestCore();
    const execution = await submitJob(core, OWNER, steps);
    await dispatch(core, { executionId: execution.id });
    const pull = 'CannotPullContainerError: pull access denied for busybox:1';
    const containers = [
      { name: 'job', lastStatus: 'STOPPED', exitCode: 1 },
      { name: 'job-step2', lastStatus: 'STOPPED', reason: pull },
      { name: 'ferry-publisher', lastStatus: 'RUNNING' },
    ];
    await handleTaskStateChange(core, event(execution.id, 2, 'RUNNING', { containers }));
    // The publisher would wait for step 2 until the deadline: Ferry stops the task.
    expect(backend.stopped).toEqual([`task/${execution.id}`]);
    await handleTaskStateChange(
      core,
      event(execution.id, 3, 'STOPPED', { stopCode: 'UserInitiated', desiredStatus: 'STOPPED', containers }),
    );
    expect(await core.store.get(execution.id)).toMatchObject({
      state: 'FAILED',
      reason: `step 2 could not start: ${pull}`,
    });
    // A step that ECS did not start because the one before it failed is how a job ends.
    const { core: other, backend: otherBackend } = await buildTestCore();
    const plain = await submitJob(other, OWNER, {
      ...steps,
      steps: [
        { image: 'alpine:3', command: ['false'] },
        { image: 'busybox:1', command: ['true'] },
      ],
    });
    await dispatch(other, { executionId: plain.id });
    await handleTaskStateChange(
      other,
      event(plain.id, 2, 'RUNNING', {
        containers: [
          { name: 'job', lastStatus: 'STOPPED', exitCode: 1 },
          {
            name: 'job-step2',
            lastStatus: 'STOPPED',
            exitCode: 143,
            reason:
              'CannotStartContainerError: dependency graph: failed to resolve container ordering dependency [job(alpine:3)] for target [job-step2(busybox:1)] as dependency did not exit successfully.',
          },
        ],
      }),
    );
    expect(otherBackend.stopped).toEqual([]);
  });
});
