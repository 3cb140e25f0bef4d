// Fargate's rules for what Ferry sends to ECS, and the Fargate bid that keeps to them: what
// the bid accepts, the ECS backend can send without RunTask or RegisterTaskDefinition refusing.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EcsBackend } from '../../shared/adapters/aws/ecs-backend.ts';
import { executionIds } from '../../shared/adapters/system.ts';
import {
  type BidPolicy,
  fargateProfile,
  makeBid,
  type PlatformProfile,
} from '../../shared/domain/bidding.ts';
import type { Bid, Execution, ResolvedConstraints } from '../../shared/domain/execution.ts';
import {
  FARGATE_RULES,
  type RunTaskRules,
  runTaskViolations,
  type TaskDefinitionRules,
  taskDefinitionViolations,
} from '../../shared/domain/fargate-rules.ts';
import { type JobSpec, parseJobSpec } from '../../shared/domain/job-spec.ts';
import { mintUploadSecret } from '../../shared/domain/upload-links.ts';
import { silentLogger } from '../../shared/logger.ts';

const policy: BidPolicy = {
  imageAllow: ['*'],
  imageDeny: [],
  registryAllow: ['*'],
  publishAllow: ['*'],
  inputAllow: [],
  minTimeoutSeconds: 1,
  maxTimeoutSeconds: 14 * 24 * 3600,
  allowEgress: true,
  maxOutputBytes: 256 * 1024 * 1024,
};
const FARGATE = fargateProfile(true);
const DOCKER: PlatformProfile = { ...FARGATE, platform: 'docker', maxCpu: 16, maxMemoryMiB: 122880 };

const bid = (input: Record<string, unknown>, profile: PlatformProfile = FARGATE) =>
  makeBid({
    spec: parseJobSpec({ image: 'alpine:3.20', ...input }),
    policy,
    profile,
    queueEstimate: () => ({ waitSeconds: 0, runningJobs: 0, queuedJobs: 0 }),
    expiresAt: '2030-01-01T00:00:00.000Z',
  });

/** The size an accepted bid gives, or the decline as an error. */
function constraintsOf(offer: Bid): ResolvedConstraints {
  if (!offer.accepted || offer.constraints === undefined) throw new Error(`declined: ${offer.reason}`);
  return offer.constraints;
}

const backend = new EcsBackend({
  cluster: 'arn:aws:ecs:us-east-1:123456789012:cluster/ferry',
  runnerImage: '123456789012.dkr.ecr.us-east-1.amazonaws.com/ferry-runner:1',
  bucket: 'ferry-results',
  subnets: ['subnet-0123456789abcdef0', 'subnet-0123456789abcdef1'],
  securityGroups: ['sg-0123456789abcdef0'],
  assignPublicIp: false,
  executionRoleArn: 'arn:aws:iam::123456789012:role/ferry-execution',
  taskRoleArn: 'arn:aws:iam::123456789012:role/ferry-task',
  logGroup: '/ferry/jobs',
  region: 'us-east-1',
  capacityProvider: 'FARGATE',
  log: silentLogger,
});

const ids = executionIds();

/** What the ECS backend would register and send for an execution of `spec`. */
function requestsFor(
  spec: JobSpec,
  constraints: ResolvedConstraints,
  id: string,
  uploadSecret = mintUploadSecret(),
) {
  const at = '2026-01-01T00:00:00.000Z';
  const execution: Execution = {
    id,
    owner: 'arn:aws:iam::123456789012:user/alice',
    state: 'LAUNCHING',
    version: 3,
    spec,
    bid: { accepted: true, reason: 'fits', constraints },
    createdAt: at,
    updatedAt: at,
    queuedAt: at,
    launchedAt: at,
    deferrals: 0,
    history: [],
  };
  const definition = backend.taskDefinitionFor(spec.image, spec);
  const run = backend.runTaskInput(
    execution,
    constraints,
    `arn:aws:ecs:us-east-1:123456789012:task-definition/${definition.family}:1`,
    uploadSecret,
  );
  return { definition, run };
}

const ferryDefinition = (): TaskDefinitionRules => backend.taskDefinitionFor('alpine:3.20');
const ferryRunTask = (): RunTaskRules => {
  const spec = parseJobSpec({ image: 'alpine:3.20', command: ['true'], labels: { team: 'data' } });
  return requestsFor(spec, constraintsOf(bid({ command: ['true'] })), ids.next()).run;
};

describe("Fargate's rules for a task definition", () => {
  it("pass Ferry's own definition", () => {
    expect(taskDefinitionViolations(ferryDefinition())).toEqual([]);
  });

  const containers = (d: TaskDefinitionRules) => [...(d.containerDefinitions ?? [])];
  it.each<[string, (d: TaskDefinitionRules) => TaskDefinitionRules, RegExp]>([
    [
      'bridge networking',
      (d) => ({ ...d, networkMode: 'bridge' }),
      /networkMode bridge, Fargate requires awsvpc/,
    ],
    ['EC2 only', (d) => ({ ...d, requiresCompatibilities: ['EC2'] }), /does not include FARGATE/],
    [
      'a size Fargate does not offer',
      (d) => ({ ...d, cpu: '256', memory: '4096' }),
      /cpu 256 with memory 4096 is not a Fargate size/,
    ],
    [
      '20 GiB of ephemeral storage',
      (d) => ({ ...d, ephemeralStorage: { sizeInGiB: 20 } }),
      /ephemeral storage 20 GiB, Fargate takes 21 to 200 GiB/,
    ],
    [
      '201 GiB of ephemeral storage',
      (d) => ({ ...d, ephemeralStorage: { sizeInGiB: 201 } }),
      /ephemeral storage 201 GiB/,
    ],
    [
      'waiting for an essential container to succeed',
      (d) => ({
        ...d,
        containerDefinitions: containers(d).map((c) =>
          c.name === 'ferry-init' ? { ...c, essential: true } : c,
        ),
      }),
      /container (job|ferry-publisher) waits for ferry-init to SUCCESS, but ferry-init is essential/,
    ],
    [
      'waiting for health without a health check',
      (d) => ({
        ...d,
        containerDefinitions: containers(d).map((c) =>
          c.name === 'job' ? { ...c, dependsOn: [{ containerName: 'ferry-init', condition: 'HEALTHY' }] } : c,
        ),
      }),
      /waits for ferry-init to be HEALTHY, but ferry-init has no health check/,
    ],
    [
      'an unknown condition',
      (d) => ({
        ...d,
        containerDefinitions: containers(d).map((c) =>
          c.name === 'job' ? { ...c, dependsOn: [{ containerName: 'ferry-init', condition: 'DONE' }] } : c,
        ),
      }),
      /depends on ferry-init with condition DONE/,
    ],
    [
      'a dependency on a container not defined',
      (d) => ({ ...d, containerDefinitions: containers(d).filter((c) => c.name !== 'ferry-init') }),
      /container (job|ferry-publisher) depends on ferry-init, which is not defined/,
    ],
    [
      'no essential container',
      (d) => ({ ...d, containerDefinitions: containers(d).map((c) => ({ ...c, essential: false })) }),
      /no container is essential/,
    ],
    [
      'a mount of a volume not declared',
      (d) => ({ ...d, volumes: [] }),
      /mounts volume ferry, which is not declared/,
    ],
    [
      'a host path',
      (d) => ({ ...d, volumes: [{ name: 'ferry', host: { sourcePath: '/tmp' } }] }),
      /Fargate has no host paths/,
    ],
  ])('refuse %s', (_name, change, reason) => {
    const violations = taskDefinitionViolations(change(ferryDefinition()));
    expect(violations.length).toBeGreaterThan(0);
    for (const violation of violations) expect(violation).toMatch(reason);
  });
});

describe("Fargate's rules for a RunTask request", () => {
  it("pass Ferry's own request, against its definition", () => {
    expect(runTaskViolations(ferryRunTask(), ferryDefinition())).toEqual([]);
  });

  const tags = (n: number) => Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: 'v' }));
  it.each<[string, (r: RunTaskRules) => RunTaskRules, RegExp]>([
    [
      'overrides past 8,192 characters',
      (r) => ({
        ...r,
        overrides: {
          ...r.overrides,
          containerOverrides: [{ name: 'job', command: ['x'.repeat(8192)] } as { name: string }],
        },
      }),
      /overrides of \d+ characters, RunTask takes at most 8192/,
    ],
    ['51 tags', (r) => ({ ...r, tags: tags(51) }), /51 tags, ECS takes at most 50 per task/],
    [
      'a tag key of 129 characters',
      (r) => ({ ...r, tags: [{ key: 'k'.repeat(129), value: 'v' }] }),
      /key of 129 characters, ECS takes 1 to 128/,
    ],
    [
      'a tag value of 257 characters',
      (r) => ({ ...r, tags: [{ key: 'k', value: 'v'.repeat(257) }] }),
      /value of 257 characters, ECS takes at most 256/,
    ],
    [
      'a tag value with a comma',
      (r) => ({ ...r, tags: [{ key: 'k', value: 'a,b' }] }),
      /tag k: value has characters ECS tags cannot carry/,
    ],
    [
      'a tag key with the aws: prefix',
      (r) => ({ ...r, tags: [{ key: 'AWS:team', value: 'v' }] }),
      /key starts with the reserved prefix aws:/,
    ],
    [
      'the EC2 launch type',
      (r) => ({ ...r, capacityProviderStrategy: undefined, launchType: 'EC2' }),
      /launch type EC2, not FARGATE/,
    ],
    [
      'a launch type beside a capacity provider',
      (r) => ({ ...r, launchType: 'FARGATE' }),
      /both a launch type and a capacity provider strategy/,
    ],
    [
      'an EC2 capacity provider',
      (r) => ({ ...r, capacityProviderStrategy: [{ capacityProvider: 'my-asg' }] }),
      /capacity provider my-asg, not FARGATE or FARGATE_SPOT/,
    ],
    [
      'no awsvpc configuration',
      (r) => ({ ...r, networkConfiguration: undefined }),
      /no awsvpc network configuration/,
    ],
    [
      'no subnet',
      (r) => ({ ...r, networkConfiguration: { awsvpcConfiguration: { subnets: [] } } }),
      /0 subnets, awsvpc takes 1 to 16/,
    ],
    [
      'a size Fargate does not offer',
      (r) => ({ ...r, overrides: { ...r.overrides, cpu: '1024', memory: '1024' } }),
      /overrides: cpu 1024 with memory 1024 is not a Fargate size/,
    ],
    [
      'an override of a container not defined',
      (r) => ({ ...r, overrides: { ...r.overrides, containerOverrides: [{ name: 'sidecar' }] } }),
      /overrides name container sidecar, not in the task definition/,
    ],
  ])('refuse %s', (_name, change, reason) => {
    expect(runTaskViolations(change(ferryRunTask()), ferryDefinition())).toEqual([
      expect.stringMatching(reason),
    ]);
  });

  it('count letters, numbers and spaces of any script as tag characters', () => {
    expect(
      runTaskViolations({ ...ferryRunTask(), tags: [{ key: 'équipe', value: 'データ 1 _.:/=+-@' }] }),
    ).toEqual([]);
  });
});

describe('the Fargate bid against what RunTask refuses', () => {
  const big = (n: number) => 'a'.repeat(n);
  it.each<[string, Record<string, unknown>, RegExp | null]>([
    ['a short command', { command: ['echo', 'hi'] }, null],
    ['a command just inside the overrides limit', { command: ['sh', '-c', big(7600)] }, null],
    [
      'a command past the overrides limit',
      { command: ['sh', '-c', big(9000)] },
      /^command and env take \d{4} characters of RunTask overrides with Ferry's own settings; Fargate takes at most 8192, so shorten them by \d+$/,
    ],
    [
      'env past the overrides limit',
      {
        command: ['true'],
        env: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`V${i}`, big(200)])),
      },
      /^command and env take \d+ characters of RunTask overrides/,
    ],
    [
      '49 labels',
      { command: ['true'], labels: Object.fromEntries(Array.from({ length: 49 }, (_, i) => [`l${i}`, 'x'])) },
      null,
    ],
    [
      '50 labels',
      { command: ['true'], labels: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`l${i}`, 'x'])) },
      /^50 labels asked; a Fargate task carries at most 49 \(ECS takes 50 tags, 1 of them Ferry's own\)$/,
    ],
    [
      'a label value with a comma',
      { command: ['true'], labels: { owners: 'ann,bob' } },
      /^label owners: value has characters ECS tags cannot carry \(letters, numbers, spaces and _ \. : \/ = \+ - @ only\)$/,
    ],
    [
      'a label value with the aws: prefix',
      { command: ['true'], labels: { origin: 'aws:batch' } },
      /^label origin: value starts with the reserved prefix aws:$/,
    ],
    ['a label value in another script', { command: ['true'], labels: { team: 'データ' } }, null],
  ])('%s', (_name, input, reason) => {
    const offer = bid(input);
    if (reason === null) expect(offer).toMatchObject({ accepted: true });
    else expect(offer).toEqual({ accepted: false, reason: expect.stringMatching(reason) });
  });

  it("counts the publisher's upload secret, which only the launch mints, in the overrides it measures", () => {
    let longest = 0;
    for (let n = 7500; n < FARGATE_RULES.overridesMaxChars; n++) {
      if (!bid({ command: ['sh', '-c', 'a'.repeat(n)] }).accepted) break;
      longest = n;
    }
    const spec = parseJobSpec({ image: 'alpine:3.20', command: ['sh', '-c', 'a'.repeat(longest)] });
    const secret = mintUploadSecret();

    const { run } = requestsFor(spec, constraintsOf(bid({ command: spec.command })), ids.next(), secret);

    // The secret's 85 characters are in what RunTask gets, and it still takes it.
    expect(runTaskViolations(run)).toEqual([]);
    const [job, publisher] = run.overrides?.containerOverrides ?? [];
    expect(publisher?.environment).toContainEqual({ name: 'FERRY_UPLOAD_SECRET', value: secret });
    // The job's container and the task's tags never carry it.
    expect(JSON.stringify(job)).not.toContain(secret);
    expect(JSON.stringify(run.tags)).not.toContain(secret);
  });

  it('leaves the local backends alone', () => {
    const input = {
      command: ['sh', '-c', big(9000)],
      labels: {
        owners: 'ann,bob',
        ...Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`l${i}`, 'x'])),
      },
    };
    expect(bid(input, DOCKER)).toMatchObject({ accepted: true });
    expect(bid(input, { ...DOCKER, platform: 'process' })).toMatchObject({ accepted: true });
  });

  it('names every reason at once', () => {
    const offer = bid({ command: ['sh', '-c', big(9000)], labels: { owners: 'ann,bob' } });
    expect(offer.accepted).toBe(false);
    expect(offer.reason).toMatch(/RunTask overrides.*; label owners: value has characters/);
  });
});

describe('what the Fargate bid accepts, RunTask and RegisterTaskDefinition take', () => {
  const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }));
  const labelKey = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,20}$/);
  const tagText = fc.stringMatching(/^[\p{L}\p{N} _.:/=+@-]{0,30}$/u);
  const spec = fc.record({
    command: fc.tuple(
      fc.string({ minLength: 1, maxLength: 10 }),
      fc.array(text, { maxLength: 20 }),
      // Often near the limit, sometimes past it.
      fc.oneof(
        fc.constant(''),
        fc.string({ minLength: 6000, maxLength: 8100 }),
        fc.string({ unit: 'binary', minLength: 1000, maxLength: 4000 }),
      ),
    ),
    env: fc.dictionary(
      fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,15}$/),
      fc.oneof(text, fc.string({ maxLength: 3000 })),
      {
        maxKeys: 10,
      },
    ),
    labels: fc.oneof(
      fc.dictionary(labelKey, tagText, { maxKeys: 55 }),
      fc.dictionary(labelKey, fc.oneof(tagText, text), { maxKeys: 4 }),
    ),
    cpu: fc.constantFrom(undefined, 0.25, 1, 4, 16),
    disk: fc.constantFrom(undefined, 20, 21, 100, 200),
    timeoutSeconds: fc.integer({ min: 1, max: 14 * 24 * 3600 }),
  });

  it('holds for a few hundred specs, near the overrides limit included', () => {
    let accepted = 0;
    let declined = 0;
    let nearLimit = 0;
    fc.assert(
      fc.property(spec, fc.boolean(), (s, fromKey) => {
        const input = {
          image: 'alpine:3.20',
          command: [s.command[0], ...s.command[1], ...(s.command[2] === '' ? [] : [s.command[2]])],
          env: s.env,
          labels: s.labels,
          resources: {
            ...(s.cpu === undefined ? {} : { cpu: s.cpu }),
            ...(s.disk === undefined ? {} : { disk: s.disk }),
          },
          timeoutSeconds: s.timeoutSeconds,
        };
        const offer = bid(input);
        if (!offer.accepted) {
          declined++;
          return;
        }
        accepted++;
        const id = fromKey ? ids.fromKey(JSON.stringify(input)) : ids.next();
        const { definition, run } = requestsFor(parseJobSpec(input), constraintsOf(offer), id);
        expect(taskDefinitionViolations(definition)).toEqual([]);
        expect(runTaskViolations(run, definition)).toEqual([]);
        expect(run.tags).toHaveLength(1 + Object.keys(s.labels).length);
        if (JSON.stringify(run.overrides).length > 7500) nearLimit++;
      }),
      { numRuns: 400, seed: 9 },
    );
    // The generator reaches both sides of each rule.
    expect(accepted).toBeGreaterThan(100);
    expect(declined).toBeGreaterThan(50);
    expect(nearLimit).toBeGreaterThan(20);
  });

  it('holds for jobs with steps, volumes and inputs: every accepted one fits one task definition', () => {
    const step = fc.record({
      command: fc.array(fc.string({ minLength: 1, maxLength: 30 }), { minLength: 1, maxLength: 4 }),
      env: fc.dictionary(fc.stringMatching(/^[A-Z_]{1,8}$/), fc.string({ maxLength: 40 }), { maxKeys: 3 }),
      ignoreError: fc.boolean(),
      workdir: fc.constantFrom(undefined, '/work', '/tmp/w'),
    });
    let accepted = 0;
    let declined = 0;
    fc.assert(
      fc.property(
        fc.array(step, { minLength: 1, maxLength: 10 }),
        fc.integer({ min: 0, max: 3 }),
        fc.boolean(),
        (steps, volumes, withInput) => {
          const input = {
            steps: steps.map((s, i) => ({
              image: i % 2 === 0 ? 'alpine:3.20' : 'busybox:1.36',
              command: s.command,
              env: s.env,
              ignoreError: s.ignoreError,
              ...(s.workdir === undefined ? {} : { workdir: s.workdir }),
            })),
            volumes: Array.from({ length: volumes }, (_, i) => `/vol${i}`),
            ...(withInput ? { inputs: [{ content: 'x', path: '/in/x.txt' }] } : {}),
          };
          const spec = parseJobSpec(input);
          const offer = makeBid({
            spec,
            policy,
            profile: FARGATE,
            queueEstimate: () => ({ waitSeconds: 0, runningJobs: 0, queuedJobs: 0 }),
            expiresAt: '2030-01-01T00:00:00.000Z',
          });
          if (!offer.accepted) {
            declined++;
            expect(offer.reason).toMatch(/steps asked/);
            return;
          }
          accepted++;
          const { definition, run } = requestsFor(spec, constraintsOf(offer), ids.next());
          expect(taskDefinitionViolations(definition)).toEqual([]);
          expect(runTaskViolations(run, definition)).toEqual([]);
          expect(definition.containerDefinitions?.filter((c) => c.name?.startsWith('job'))).toHaveLength(
            steps.length,
          );
        },
      ),
      { numRuns: 300, seed: 13 },
    );
    expect(accepted).toBeGreaterThan(100);
    expect(declined).toBeGreaterThan(20);
  });

  it('leaves room for nothing past the limit: the largest accepted command is within a few characters of it', () => {
    const limit = FARGATE_RULES.overridesMaxChars;
    let longest = 0;
    for (let n = 7000; n < limit; n++) {
      if (!bid({ command: ['sh', '-c', 'a'.repeat(n)] }).accepted) break;
      longest = n;
    }
    const accepted = constraintsOf(bid({ command: ['sh', '-c', 'a'.repeat(longest)] }));
    const { run } = requestsFor(
      parseJobSpec({ image: 'alpine:3.20', command: ['sh', '-c', 'a'.repeat(longest)] }),
      accepted,
      ids.next(),
    );
    const length = JSON.stringify(run.overrides).length;
    expect(length).toBeLessThanOrEqual(limit);
    // Measured with the longest id Ferry could give, so a real id leaves a little slack.
    expect(limit - length).toBeLessThan(40);
  });
});
