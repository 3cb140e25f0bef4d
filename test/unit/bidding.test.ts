import { describe, expect, it } from 'vitest';
import {
  type BidPolicy,
  fargateProfile,
  makeBid,
  type PlatformProfile,
  resolveConstraints,
} from '../../shared/domain/bidding.ts';
import { FARGATE_SIZES, fargateCostPerHour, fitFargate } from '../../shared/domain/fargate.ts';
import { parseJobSpec } from '../../shared/domain/job-spec.ts';

const policy: BidPolicy = {
  imageAllow: ['*'],
  imageDeny: [],
  registryAllow: ['*'],
  publishAllow: ['*'],
  inputAllow: [],
  minTimeoutSeconds: 1,
  maxTimeoutSeconds: 86400,
  allowEgress: true,
  maxOutputBytes: 256 * 1024 * 1024,
};

const fargate: PlatformProfile = {
  platform: 'fargate',
  maxCpu: 16,
  maxMemoryMiB: 122880,
  supportsGpu: false,
  supportsInputs: true,
  supportsOutputs: true,
  supportsPublish: true,
  maxSteps: 16,
  supportsVolumes: true,
  enforcesNetworkNone: true,
};

const docker: PlatformProfile = { ...fargate, platform: 'docker', maxCpu: 2, maxMemoryMiB: 4096 };

const noQueue = () => ({ waitSeconds: 0, runningJobs: 0, queuedJobs: 0 });
const bid = (spec: Record<string, unknown>, profile = fargate, p = policy) =>
  makeBid({
    spec: parseJobSpec({ image: 'alpine:3', command: ['true'], ...spec }, p.maxOutputBytes),
    policy: p,
    profile,
    queueEstimate: noQueue,
    expiresAt: '2030-01-01T00:00:00.000Z',
  });

describe('Fargate sizes', () => {
  it('holds every valid pair, from 0.25 vCPU/512 MiB to 16 vCPU/120 GiB', () => {
    expect(FARGATE_SIZES[0]).toEqual({ cpuUnits: 256, memoryMiB: 512 });
    expect(FARGATE_SIZES.at(-1)).toEqual({ cpuUnits: 16384, memoryMiB: 122880 });
    expect(FARGATE_SIZES.filter((s) => s.cpuUnits === 1024).map((s) => s.memoryMiB)).toEqual([
      2048, 3072, 4096, 5120, 6144, 7168, 8192,
    ]);
    expect(FARGATE_SIZES.filter((s) => s.cpuUnits === 8192).length).toBe(12);
    expect(FARGATE_SIZES.filter((s) => s.cpuUnits === 16384).length).toBe(12);
  });

  it.each([
    [{}, 256, 512, 20],
    [{ cpu: 0.25, memoryMiB: 600 }, 256, 1024, 20],
    [{ cpu: 0.3 }, 512, 1024, 20],
    [{ cpu: 1, memoryMiB: 16384 }, 2048, 16384, 20],
    [{ memoryMiB: 9000 }, 2048, 9216, 20],
    [{ cpu: 5 }, 8192, 16384, 20],
    [{ cpu: 16, memoryMiB: 122880, diskGiB: 20.5 }, 16384, 122880, 21],
    [{ diskGiB: 150.2 }, 256, 512, 151],
  ])('rounds %j up to %i CPU units, %i MiB, %i GiB', (request, cpuUnits, memoryMiB, diskGiB) => {
    const fit = fitFargate(request);
    expect(fit).toEqual({ fits: true, size: { cpuUnits, memoryMiB }, diskGiB });
  });

  it('declines what no size can hold, naming the ask and the limit', () => {
    const fit = fitFargate({ cpu: 32, memoryMiB: 200 * 1024, diskGiB: 500 });
    expect(fit.fits).toBe(false);
    if (fit.fits) return;
    expect(fit.reason).toContain('cpu 32 vCPU asked, Fargate offers at most 16 vCPU');
    expect(fit.reason).toContain('memory 200 GiB asked, Fargate offers at most 120 GiB');
    expect(fit.reason).toContain('disk 500 GiB asked');
  });

  it('prices a size by vCPU, memory and extra storage', () => {
    expect(fargateCostPerHour(1, 2048, 20)).toBeCloseTo(0.04048 + 2 * 0.004445, 6);
    expect(fargateCostPerHour(1, 2048, 30)).toBeCloseTo(0.04048 + 2 * 0.004445 + 10 * 0.000111, 6);
  });
});

describe('bids', () => {
  it('accepts with the exact size and an estimate', () => {
    const offer = bid({ resources: { cpu: 1, memory: '3GiB' }, timeoutSeconds: 1800 });
    expect(offer.accepted).toBe(true);
    expect(offer.constraints).toMatchObject({
      platform: 'fargate',
      cpu: 1,
      memoryMiB: 3072,
      fargate: { cpu: '1024', memory: '3072', ephemeralStorageGiB: 20 },
    });
    expect(offer.estimate?.costPerHourUsd).toBeCloseTo(0.04048 + 3 * 0.004445, 6);
    expect(offer.estimate?.maxCostUsd).toBeCloseTo((0.04048 + 3 * 0.004445) / 2, 5);
    expect(offer.reason).toMatch(/fits Fargate size 1 vCPU, 3 GiB/);
  });

  it('declines GPUs on Fargate and names every problem at once', () => {
    const offer = bid({ resources: { gpu: 1, cpu: 64 }, timeoutSeconds: 999999 });
    expect(offer.accepted).toBe(false);
    expect(offer.reason).toContain('cpu 64 vCPU asked, Fargate offers at most 16 vCPU');
    expect(offer.reason).toContain('1 GPU asked; the fargate backend offers no GPUs');
    expect(offer.reason).toContain('timeout 999999s asked; allowed is 1s to 86400s');
    expect(offer.constraints).toBeUndefined();
  });

  it('applies image allow and deny patterns', () => {
    const strict = { ...policy, imageAllow: ['registry.example/*'], imageDeny: ['registry.example/bad*'] };
    expect(bid({ image: 'registry.example/tool:1' }, fargate, strict).accepted).toBe(true);
    expect(bid({ image: 'docker.io/tool:1' }, fargate, strict).reason).toBe(
      'image docker.io/tool:1 is not allowed; allowed images match: registry.example/*',
    );
    expect(bid({ image: 'registry.example/bad:1' }, fargate, strict).reason).toContain('denied by pattern');
  });

  it('judges every step’s image, and the steps and volumes a backend can run', () => {
    const stepped = (steps: object[], profile: PlatformProfile, p = policy, extra: object = {}) =>
      makeBid({
        spec: parseJobSpec({ steps, ...extra }, p.maxOutputBytes),
        policy: p,
        profile,
        queueEstimate: noQueue,
        expiresAt: '2030-01-01T00:00:00.000Z',
      });
    const two = [
      { image: 'registry.example/tool:1', command: ['true'] },
      { image: 'docker.io/other:1', command: ['true'] },
    ];
    const strict = { ...policy, imageAllow: ['registry.example/*'] };
    expect(stepped(two, docker, strict).reason).toBe(
      'image docker.io/other:1 is not allowed; allowed images match: registry.example/*',
    );
    expect(stepped(two, docker).accepted).toBe(true);
    const oneStepFargate = { ...fargate, maxSteps: 1, supportsVolumes: false };
    expect(stepped(two, oneStepFargate, policy, { volumes: ['/work'] }).reason).toBe(
      '2 steps asked; the fargate backend runs one step per job; volumes asked; the fargate backend does not support volumes',
    );
    expect(
      stepped([{ image: 'alpine:3', command: ['false'], ignoreError: true }], oneStepFargate).reason,
    ).toBe("steps asked; the fargate backend runs a job's image and command only");
    const many = Array.from({ length: 5 }, () => ({ image: 'alpine:3', command: ['true'] }));
    expect(stepped(many, { ...docker, maxSteps: 4 }).reason).toBe(
      '5 steps asked; the docker backend runs at most 4 steps in a job',
    );
    expect(
      stepped(two, docker, policy, {
        volumes: ['/work', '/work/tmp'],
        inputs: [{ content: 'x', path: '/work/in' }],
      }).reason,
    ).toBe(
      'volume /work and input at /work/in overlap: each path must be apart from the others; volume /work and volume /work/tmp overlap: each path must be apart from the others',
    );
  });

  it('fits a Fargate job’s steps into one task definition, declining past its 10 containers', () => {
    const profile = fargateProfile(true);
    const steps = (count: number) =>
      Array.from({ length: count }, (_, i) => ({ image: 'alpine:3', command: ['echo', String(i)] }));
    const offer = (count: number, extra: object = {}) =>
      makeBid({
        spec: parseJobSpec({ steps: steps(count), ...extra }, policy.maxOutputBytes),
        policy,
        profile,
        queueEstimate: noQueue,
        expiresAt: '2030-01-01T00:00:00.000Z',
      });
    // Init and publisher, and 8 steps; with data the stage container leaves room for 7.
    expect(offer(8).accepted).toBe(true);
    expect(offer(9).reason).toBe('9 steps asked; the fargate backend runs at most 8 steps in a job');
    expect(offer(7, { volumes: ['/work'] }).accepted).toBe(true);
    expect(offer(8, { volumes: ['/work'] }).reason).toBe(
      "8 steps asked; with its inputs, outputs or volumes a job's Fargate task holds 11 containers (Ferry's init, stage and publisher, and one per step), and ECS takes at most 10: at most 7 steps with data",
    );
    expect(
      makeBid({
        spec: parseJobSpec(
          { steps: [{ image: 'alpine:3', command: ['false'], ignoreError: true }] },
          policy.maxOutputBytes,
        ),
        policy,
        profile,
        queueEstimate: noQueue,
        expiresAt: '2030-01-01T00:00:00.000Z',
      }).accepted,
    ).toBe(true);
  });

  it('refuses egress where the policy forbids it, and oversize output limits', () => {
    const closed = { ...policy, allowEgress: false, maxOutputBytes: 1024 };
    const offer = bid({ network: 'egress', outputLimits: { stdoutBytes: 4096 } }, fargate, closed);
    expect(offer.reason).toContain('network "egress" asked; this executor allows only network "none"');
    expect(offer.reason).toContain('stdoutBytes 4 KiB asked; at most 1 KiB per stream is stored');
    expect(offer.reason).not.toContain('stderrBytes');
  });

  it('constrains local jobs to the host and says what is not enforced', () => {
    expect(
      resolveConstraints(parseJobSpec({ image: 'a', command: ['x'], resources: { cpu: 4 } }), docker),
    ).toEqual({
      fits: false,
      reason: 'cpu 4 vCPU asked, this host offers at most 2 vCPU',
    });
    const fit = resolveConstraints(
      parseJobSpec({ image: 'a', command: ['x'], resources: { disk: 5 } }),
      docker,
    );
    expect(fit).toMatchObject({ fits: true, constraints: { cpu: 1, memoryMiB: 1024 } });
    if (fit.fits) expect(fit.constraints.notes).toContain('disk is not limited by the Docker backend');
    const processFit = resolveConstraints(parseJobSpec({ image: 'a', command: ['x'] }), {
      ...docker,
      platform: 'process',
    });
    if (processFit.fits) expect(processFit.constraints.notes[0]).toMatch(/does not isolate/);
  });

  it('declines publishing anywhere the executor may not write', () => {
    const limited = { ...policy, publishAllow: ['s3://results-bucket/ferry/*'] };
    expect(
      bid({ publish: { destination: 's3://results-bucket/ferry/team-a' } }, fargate, limited).accepted,
    ).toBe(true);
    expect(bid({ publish: { destination: 's3://other-bucket/x' } }, fargate, limited).reason).toBe(
      'publish to s3://other-bucket/x asked; allowed destinations match: s3://results-bucket/ferry/*',
    );
    expect(
      bid({ publish: { destination: 's3://any-bucket/x' } }, fargate, { ...policy, publishAllow: [] }).reason,
    ).toBe('publish to s3://any-bucket/x asked; this executor publishes nowhere');
  });

  it('says when network "none" is not enforced', () => {
    const open = bid({ network: 'none' }, { ...fargate, enforcesNetworkNone: false });
    expect(open.accepted).toBe(true);
    expect(open.constraints?.notes).toContainEqual(
      expect.stringMatching(/network "none" is not enforced here/),
    );
    expect(bid({ network: 'none' }).constraints?.notes).toEqual([]);
  });

  it('declines inputs where the backend cannot fetch them', () => {
    const offer = bid(
      { inputs: [{ url: 'https://example.com/a', path: '/in/a' }] },
      { ...docker, supportsInputs: false },
    );
    expect(offer.reason).toBe('inputs asked; the docker backend does not support inputs');
  });
});
