import { describe, expect, it } from 'vitest';
import {
  type CapacityLimits,
  type Demand,
  decideLaunch,
  estimateWait,
  estimateWaitSeconds,
} from '../../shared/domain/capacity.ts';

const limits: CapacityLimits = { maxConcurrency: 4, maxCpu: 2, maxMemoryMiB: 4096, starvationSeconds: 60 };
const now = new Date('2030-01-01T00:10:00.000Z');
const ago = (seconds: number) => new Date(now.getTime() - seconds * 1000).toISOString();
const job = (id: string, cpu: number, queuedSecondsAgo = 0, extra: Partial<Demand> = {}): Demand => ({
  executionId: id,
  cpu,
  memoryMiB: 256,
  queuedAt: ago(queuedSecondsAgo),
  ...extra,
});

describe('capacity', () => {
  it('launches what fits and defers what does not, saying why', () => {
    expect(decideLaunch(job('a', 1), { active: [job('r', 1)], waiting: [job('a', 1)] }, limits, now)).toEqual(
      {
        launch: true,
      },
    );
    const decision = decideLaunch(
      job('big', 2),
      { active: [job('r', 1)], waiting: [job('big', 2)] },
      limits,
      now,
    );
    expect(decision).toEqual({
      launch: false,
      cause: 'capacity',
      reason: 'needs 2 vCPU, 256 MiB; 1 vCPU, 3840 MiB and 3 of 4 slots free',
    });
  });

  it('counts concurrency slots as well as cpu and memory', () => {
    const active = [job('r1', 0.1), job('r2', 0.1), job('r3', 0.1), job('r4', 0.1)];
    expect(decideLaunch(job('a', 0.1), { active, waiting: [] }, limits, now).launch).toBe(false);
  });

  it('lets small jobs pass a big one until the big one has waited past the bound', () => {
    const running = [job('r', 1)];
    const big = job('big', 2, 30);
    const small = job('small', 0.5, 1);
    expect(decideLaunch(small, { active: running, waiting: [big, small] }, limits, now).launch).toBe(true);

    const starving = job('big', 2, 61);
    const decision = decideLaunch(small, { active: running, waiting: [starving, small] }, limits, now);
    expect(decision).toMatchObject({ launch: false, cause: 'reservation', reservedFor: 'big' });
    // Once the running job ends, the starving job fits and goes first.
    expect(decideLaunch(starving, { active: [], waiting: [starving, small] }, limits, now).launch).toBe(true);
  });

  it('reserves only for the oldest starving job', () => {
    const older = job('older', 1, 120);
    const younger = job('younger', 1, 90);
    expect(
      decideLaunch(younger, { active: [job('r', 1)], waiting: [older, younger] }, limits, now),
    ).toMatchObject({
      launch: false,
      reservedFor: 'older',
    });
    expect(
      decideLaunch(older, { active: [job('r', 1)], waiting: [older, younger] }, limits, now).launch,
    ).toBe(true);
  });

  it('lets a waiting job of higher priority go first, unless the candidate is starving', () => {
    const low = job('low', 1, 5, { priority: 0 });
    const high = job('high', 1, 1, { priority: 10 });
    expect(decideLaunch(low, { active: [job('r', 1)], waiting: [low, high] }, limits, now)).toEqual({
      launch: false,
      cause: 'priority',
      reason: 'high (priority 10) fits the free capacity and goes first',
    });
    expect(decideLaunch(high, { active: [job('r', 1)], waiting: [low, high] }, limits, now).launch).toBe(
      true,
    );
    // A higher priority that cannot fit anyway holds nobody back.
    const huge = job('huge', 2, 1, { priority: 10 });
    expect(decideLaunch(low, { active: [job('r', 1)], waiting: [low, huge] }, limits, now).launch).toBe(true);
    // Past the starvation bound, age beats priority.
    const starving = job('old', 1, 120, { priority: -5 });
    expect(
      decideLaunch(starving, { active: [job('r', 1)], waiting: [starving, high] }, limits, now).launch,
    ).toBe(true);
  });

  it('estimates the wait from the deadlines of running jobs', () => {
    const usage = {
      active: [job('r1', 1, 0, { deadlineAt: ago(-30) }), job('r2', 1, 0, { deadlineAt: ago(-90) })],
      waiting: [],
    };
    expect(estimateWaitSeconds({ cpu: 1, memoryMiB: 256 }, usage, limits, now)).toBe(30);
    expect(estimateWaitSeconds({ cpu: 2, memoryMiB: 256 }, usage, limits, now)).toBe(90);
    expect(estimateWaitSeconds({ cpu: 1, memoryMiB: 256 }, { active: [], waiting: [] }, limits, now)).toBe(0);
  });

  it('expects a running job to run about as long again as it has, at least 5 s, never past its timeout', () => {
    const inSeconds = (seconds: number) => new Date(now.getTime() + seconds * 1000).toISOString();
    const running = (id: string, startedSecondsAgo: number, deadlineInSeconds: number) =>
      job(id, 2, 0, { startedAt: ago(startedSecondsAgo), deadlineAt: inSeconds(deadlineInSeconds) });

    // The whole host is taken by one job; the candidate waits for it.
    const wait = (active: Demand) =>
      estimateWait(job('c', 2), { active: [active], waiting: [] }, limits, now);

    expect(wait(running('r', 20, 3580))).toEqual({ expected: 20, atMost: 3580 });
    expect(wait(running('r', 1, 3599))).toEqual({ expected: 5, atMost: 3599 });
    expect(wait(running('r', 100, 30))).toEqual({ expected: 30, atMost: 30 });
    expect(
      estimateWait(
        job('c', 1),
        { active: [running('r', 1, 10)], waiting: [] },
        { ...limits, maxCpu: 4 },
        now,
      ),
    ).toEqual({ expected: 0, atMost: 0 });
  });
});
