import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import { type BidPolicy, makeBid, type PlatformProfile } from '../../shared/domain/bidding.ts';
import {
  DEFAULT_REGISTRIES,
  isInternalRegistry,
  parseImageReference,
  registryAllowed,
} from '../../shared/domain/image-reference.ts';
import { parseJobSpec } from '../../shared/domain/job-spec.ts';

const DIGEST = `sha256:${'a'.repeat(64)}`;

describe('image references, read the way Docker reads them', () => {
  it.each([
    ['alpine', { registry: 'docker.io', repository: 'library/alpine' }],
    ['alpine:3.20', { registry: 'docker.io', repository: 'library/alpine', tag: '3.20' }],
    ['library/alpine:3', { registry: 'docker.io', repository: 'library/alpine', tag: '3' }],
    ['team/tool', { registry: 'docker.io', repository: 'team/tool' }],
    ['docker.io/alpine', { registry: 'docker.io', repository: 'library/alpine' }],
    ['index.docker.io/team/tool:1', { registry: 'docker.io', repository: 'team/tool', tag: '1' }],
    [
      'registry-1.docker.io/library/alpine',
      { registry: 'registry-1.docker.io', repository: 'library/alpine' },
    ],
    ['localhost/x', { registry: 'localhost', repository: 'x' }],
    ['localhost:5000/x:1', { registry: 'localhost:5000', repository: 'x', tag: '1' }],
    ['127.0.0.1:2024/x:1', { registry: '127.0.0.1:2024', repository: 'x', tag: '1' }],
    ['[::1]:80/a/b:2', { registry: '[::1]:80', repository: 'a/b', tag: '2' }],
    [
      `public.ecr.aws/docker/library/alpine@${DIGEST}`,
      { registry: 'public.ecr.aws', repository: 'docker/library/alpine', digest: DIGEST },
    ],
    [`a/b:1@${DIGEST}`, { registry: 'docker.io', repository: 'a/b', tag: '1', digest: DIGEST }],
    ['ferry-test:busybox', { registry: 'docker.io', repository: 'library/ferry-test', tag: 'busybox' }],
    // A first component without ".", ":" or "localhost" is a Docker Hub namespace, not a host.
    ['local/none:1', { registry: 'docker.io', repository: 'local/none', tag: '1' }],
    ['2130706433/x', { registry: 'docker.io', repository: '2130706433/x' }],
  ])('%s', (image, expected) => {
    expect(parseImageReference(image)).toEqual(expected);
  });

  it('accepts an IPv6 registry in a job spec, so the bid (not the validator) decides about it', () => {
    expect(parseJobSpec({ image: '[::1]:80/x:1', command: ['true'] }).image).toBe('[::1]:80/x:1');
    expect(() => parseJobSpec({ image: '[::1]:80', command: ['true'] })).toThrow(/image/);
  });
});

describe('internal registry addresses', () => {
  it.each([
    ['localhost', true],
    ['localhost:5000', true],
    ['x.localhost', true],
    ['127.0.0.1:2024', true],
    ['127.1:2024', true],
    ['0x7f.0.0.1', true],
    ['0177.0.0.1', true],
    ['0.0.0.0', true],
    ['10.0.0.1:5000', true],
    ['172.16.3.4', true],
    ['192.168.1.1', true],
    ['169.254.169.254', true],
    ['100.64.0.1', true],
    ['[::1]:80', true],
    ['[::]', true],
    ['[fe80::1]:5000', true],
    ['[fd00::1]', true],
    ['[::ffff:127.0.0.1]:80', true],
    ['[::ffff:7f00:1]', true],
    ['[::ffff:8.8.8.8]', false],
    ['docker.io', false],
    ['public.ecr.aws', false],
    ['8.8.8.8', false],
    ['[2001:db8::1]', false],
    ['registry.example:5000', false],
  ])('%s → %s', (registry, internal) => {
    expect(isInternalRegistry(registry)).toBe(internal);
  });
});

describe('the registry allow-list', () => {
  it.each([
    ['docker.io', DEFAULT_REGISTRIES, true],
    ['index.docker.io', DEFAULT_REGISTRIES, true],
    ['registry-1.docker.io', DEFAULT_REGISTRIES, true],
    ['public.ecr.aws', DEFAULT_REGISTRIES, true],
    ['quay.io', DEFAULT_REGISTRIES, false],
    ['127.0.0.1:2024', DEFAULT_REGISTRIES, false],
    ['quay.io', ['*'], true],
    ['QUAY.io', ['quay.io'], true],
    ['123456789012.dkr.ecr.eu-west-1.amazonaws.com', ['123456789012.dkr.ecr.*.amazonaws.com'], true],
    ['999999999999.dkr.ecr.eu-west-1.amazonaws.com', ['123456789012.dkr.ecr.*.amazonaws.com'], false],
    // Wildcards never reach inside the host; an exact name does.
    ['127.0.0.1:2024', ['*'], false],
    ['localhost:5000', ['*'], false],
    ['localhost:5000', ['localhost:*'], false],
    ['[::1]:80', ['*'], false],
    ['169.254.169.254', ['*'], false],
    ['10.0.0.1:5000', ['10.0.0.*'], false],
    ['localhost:5000', ['localhost:5000'], true],
    ['10.0.0.1:5000', ['10.0.0.1:5000'], true],
    ['10.0.0.1:5001', ['10.0.0.1:5000'], false],
  ])('%s with %j → %s', (registry, patterns, allowed) => {
    expect(registryAllowed(registry, patterns)).toBe(allowed);
  });
});

describe('the bid on an image', () => {
  const policy: BidPolicy = {
    imageAllow: ['*'],
    imageDeny: [],
    registryAllow: ['*'],
    publishAllow: ['*'],
    inputAllow: [],
    minTimeoutSeconds: 1,
    maxTimeoutSeconds: 86400,
    allowEgress: true,
    maxOutputBytes: 1024 * 1024,
  };
  const docker: PlatformProfile = {
    platform: 'docker',
    maxCpu: 2,
    maxMemoryMiB: 4096,
    supportsGpu: false,
    supportsInputs: false,
    supportsOutputs: false,
    supportsPublish: true,
    maxSteps: 16,
    supportsVolumes: true,
    enforcesNetworkNone: true,
  };
  const bid = (image: string, registryAllow: readonly string[], imagePresent = false) =>
    makeBid({
      spec: parseJobSpec({ image, command: ['true'] }, policy.maxOutputBytes),
      policy: { ...policy, registryAllow },
      profile: docker,
      facts: { presentImages: new Set(imagePresent ? [image] : []) },
      queueEstimate: () => ({ waitSeconds: 0, runningJobs: 0, queuedJobs: 0 }),
      expiresAt: '2030-01-01T00:00:00.000Z',
    });

  it.each([
    ['alpine:3.20', true],
    ['public.ecr.aws/docker/library/alpine:3.20', true],
    ['quay.io/x:1', false],
    ['127.0.0.1:2024/x:1', false],
    ['localhost:5000/x', false],
    ['[::1]:80/x', false],
    ['169.254.169.254/x', false],
    ['10.0.0.1:5000/x', false],
  ])('%s with the default list → accepted %s', (image, accepted) => {
    expect(bid(image, DEFAULT_REGISTRIES).accepted).toBe(accepted);
  });

  it('names the registry and the setting when it declines', () => {
    expect(bid('quay.io/x:1', DEFAULT_REGISTRIES).reason).toBe(
      'image quay.io/x:1: registry quay.io is not allowed; FERRY_REGISTRY_ALLOW is docker.io, registry-1.docker.io, public.ecr.aws; images already on this host run whatever their name',
    );
    expect(bid('127.0.0.1:2024/x:1', ['*']).reason).toBe(
      'image 127.0.0.1:2024/x:1: registry 127.0.0.1:2024 is a local or private address, allowed only when FERRY_REGISTRY_ALLOW names it exactly; images already on this host run whatever their name',
    );
  });

  it('lets an image already on the host run whatever its name', () => {
    expect(bid('127.0.0.1:2024/x:1', DEFAULT_REGISTRIES, true).accepted).toBe(true);
    expect(bid('quay.io/x:1', [], true).accepted).toBe(true);
  });

  it('allows an internal registry named exactly', () => {
    expect(bid('localhost:5000/x', ['localhost:5000']).accepted).toBe(true);
  });
});

describe('FERRY_REGISTRY_ALLOW', () => {
  const aws = {
    FERRY_TABLE_NAME: 't',
    FERRY_QUEUE_URL: 'https://sqs.eu-west-1.amazonaws.com/123456789012/q',
    FERRY_BUCKET: 'bucket',
    FERRY_CLUSTER: 'c',
    FERRY_SUBNETS: 'subnet-1',
    FERRY_SECURITY_GROUPS: 'sg-1',
    FERRY_TASK_ROLE_ARN: 'arn:aws:iam::123456789012:role/task',
    FERRY_EXECUTION_ROLE_ARN: 'arn:aws:iam::123456789012:role/exec',
    FERRY_LOG_GROUP: 'lg',
    FERRY_RUNNER_IMAGE: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/runner:1',
  };

  it('defaults to Docker Hub and public ECR locally', () => {
    expect(loadConfig({}).policy.registryAllow).toEqual([
      'docker.io',
      'registry-1.docker.io',
      'public.ecr.aws',
    ]);
  });

  it("adds the account's own ECR registries on AWS, and no other account's", () => {
    const allow = loadConfig(aws).policy.registryAllow;
    expect(registryAllowed('123456789012.dkr.ecr.eu-west-1.amazonaws.com', allow)).toBe(true);
    expect(registryAllowed('210987654321.dkr.ecr.eu-west-1.amazonaws.com', allow)).toBe(false);
    expect(registryAllowed('docker.io', allow)).toBe(true);
  });

  it('is a comma-separated list that replaces the default', () => {
    expect(loadConfig({ FERRY_REGISTRY_ALLOW: 'quay.io, localhost:5000' }).policy.registryAllow).toEqual([
      'quay.io',
      'localhost:5000',
    ]);
    expect(loadConfig({ ...aws, FERRY_REGISTRY_ALLOW: 'quay.io' }).policy.registryAllow).toEqual(['quay.io']);
  });
});
