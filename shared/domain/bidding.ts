// Bidding: each strategy looks at one aspect of a job and either lets it pass or
// declines with a reason that names what was asked and what is possible. A bid
// collects every decline at once, so a caller fixes a spec in one round trip.
import { dataProblems } from './data-plan.ts';
import type { Bid, Estimate, Platform, ResolvedConstraints } from './execution.ts';
import { FARGATE_LIMITS, fargateCostPerHour, fitFargate } from './fargate.ts';
import { FARGATE_RULES, overridesLength, tagViolations } from './fargate-rules.ts';
import {
  CONTAINERS_PER_TASK,
  executionTags,
  LONGEST_EXECUTION_ID,
  labelTagKey,
  taskContainerCount,
  taskDataNotes,
  taskDataProblems,
  taskOverrides,
} from './fargate-task.ts';
import { isInternalRegistry, parseImageReference, registryAllowed } from './image-reference.ts';
import { imagesOf, type JobSpec, stepsOf } from './job-spec.ts';
import { formatBytes, formatMiB } from './units.ts';
import { LONGEST_UPLOAD_SECRET } from './upload-links.ts';

export interface BidPolicy {
  readonly imageAllow: readonly string[];
  readonly imageDeny: readonly string[];
  /** Registry host patterns images may be pulled from (FERRY_REGISTRY_ALLOW). */
  readonly registryAllow: readonly string[];
  readonly publishAllow: readonly string[];
  /** Prefixes inputs may be fetched from (FERRY_INPUT_ALLOW): s3://bucket/prefix/, https://host/path/. */
  readonly inputAllow: readonly string[];
  /** Prefixes outputs may be delivered to (FERRY_OUTPUT_ALLOW): file:///dir/. */
  readonly outputAllow?: readonly string[];
  readonly minTimeoutSeconds: number;
  readonly maxTimeoutSeconds: number;
  readonly allowEgress: boolean;
  readonly maxOutputBytes: number;
}

export interface PlatformProfile {
  readonly platform: Platform;
  /** The most one job can be given (the host for local backends, a task for Fargate). */
  readonly maxCpu: number;
  readonly maxMemoryMiB: number;
  readonly supportsGpu: boolean;
  readonly supportsInputs: boolean;
  readonly supportsOutputs: boolean;
  readonly supportsPublish: boolean;
  /** The most steps one job may have: each is a container run after the one before. */
  readonly maxSteps: number;
  /** Whether a job may ask for volumes (empty writable directories its steps share). */
  readonly supportsVolumes: boolean;
  /** Whether outputs may be delivered to a `url` once stored (file:// destinations). */
  readonly deliversOutputs?: boolean;
  /** False where a job asking for network "none" still gets an interface that can reach out. */
  readonly enforcesNetworkNone: boolean;
  /**
   * Whether an image is already on the host, answered locally without contacting a
   * registry (Docker backend only): such images run whatever their name.
   */
  readonly imagePresent?: (image: string) => Promise<boolean>;
}

/** What a look at an input's source found before the bid: its size when it could be told. */
export interface InputSize {
  /** Bytes of the object, or of everything under the prefix, when known. */
  readonly bytes?: number;
  /** More objects are under the prefix than were counted: `bytes` is a floor. */
  readonly atLeast?: boolean;
  /** The source answered that there is nothing there (now: it may be there when the job starts). */
  readonly missing?: boolean;
}

/** What the bid learnt about the job's surroundings before deciding (bidding itself is pure). */
export interface BidFacts {
  /** The job's images that are already on this host (Docker backend only). */
  readonly presentImages: ReadonlySet<string>;
  /** One per input, in order, when the sources were looked at. */
  readonly inputSizes?: readonly InputSize[];
}

export type StrategyVerdict = { readonly decline?: string; readonly notes?: readonly string[] };
export type BidStrategy = (
  spec: JobSpec,
  policy: BidPolicy,
  profile: PlatformProfile,
  facts: BidFacts,
) => StrategyVerdict;

/** What a Fargate deployment offers one job; `enforcesNetworkNone` depends on its network layout. */
export const fargateProfile = (enforcesNetworkNone: boolean): PlatformProfile => ({
  platform: 'fargate',
  maxCpu: FARGATE_LIMITS.maxCpu,
  maxMemoryMiB: FARGATE_LIMITS.maxMemoryMiB,
  supportsGpu: false,
  supportsInputs: true,
  supportsOutputs: true,
  supportsPublish: true,
  // Within one task definition's containers, beside Ferry's init and publisher; a job with data
  // has a stage container too, which fargateRequestLimits counts.
  maxSteps: CONTAINERS_PER_TASK - 2,
  supportsVolumes: true,
  enforcesNetworkNone,
});

/** Local backends' defaults when a job does not say: enough for ordinary tools. */
export const LOCAL_DEFAULT_CPU = 1;
export const LOCAL_DEFAULT_MEMORY_MIB = 1024;

function globToRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*');
  return new RegExp(`^${escaped}$`);
}

export const imagePolicy: BidStrategy = (spec, policy) => {
  const declines: string[] = [];
  for (const image of imagesOf(spec)) {
    const denied = policy.imageDeny.find((pattern) => globToRegExp(pattern).test(image));
    if (denied !== undefined) {
      declines.push(`image ${image} is denied by pattern "${denied}"`);
      continue;
    }
    if (!policy.imageAllow.some((pattern) => globToRegExp(pattern).test(image))) {
      declines.push(`image ${image} is not allowed; allowed images match: ${policy.imageAllow.join(', ')}`);
    }
  }
  return declines.length === 0 ? {} : { decline: declines.join('; ') };
};

/** The engine never pulls from a registry the executor does not allow: an image name is an address. */
export const registryPolicy: BidStrategy = (spec, policy, profile, facts) => {
  const declines: string[] = [];
  for (const image of imagesOf(spec)) {
    if (facts.presentImages.has(image)) continue;
    const { registry } = parseImageReference(image);
    if (registryAllowed(registry, policy.registryAllow)) continue;
    const onHost =
      profile.platform === 'docker' ? '; images already on this host run whatever their name' : '';
    const why = isInternalRegistry(registry)
      ? `registry ${registry} is a local or private address, allowed only when FERRY_REGISTRY_ALLOW names it exactly`
      : `registry ${registry} is not allowed; FERRY_REGISTRY_ALLOW is ${policy.registryAllow.join(', ') || 'empty'}`;
    declines.push(`image ${image}: ${why}${onHost}`);
  }
  return declines.length === 0 ? {} : { decline: declines.join('; ') };
};

/** A job's steps each take a container; a backend runs as many in one job as it can chain. */
export const stepLimit: BidStrategy = (spec, _policy, profile) => {
  const asked = stepsOf(spec).length;
  if (asked === 1 && spec.steps !== undefined && profile.maxSteps === 1) {
    // One step whose failure is ignored: a backend of single steps has no steps to ignore it in.
    return { decline: `steps asked; the ${profile.platform} backend runs a job's image and command only` };
  }
  if (asked <= profile.maxSteps) return {};
  return {
    decline:
      profile.maxSteps === 1
        ? `${asked} steps asked; the ${profile.platform} backend runs one step per job`
        : `${asked} steps asked; the ${profile.platform} backend runs at most ${profile.maxSteps} steps in a job`,
  };
};

export const timeoutBounds: BidStrategy = (spec, policy) => {
  const { timeoutSeconds } = spec;
  if (timeoutSeconds < policy.minTimeoutSeconds || timeoutSeconds > policy.maxTimeoutSeconds) {
    return {
      decline: `timeout ${timeoutSeconds}s asked; allowed is ${policy.minTimeoutSeconds}s to ${policy.maxTimeoutSeconds}s`,
    };
  }
  return {};
};

export const gpuSupport: BidStrategy = (spec, _policy, profile) => {
  if (spec.resources.gpu > 0 && !profile.supportsGpu) {
    return { decline: `${spec.resources.gpu} GPU asked; the ${profile.platform} backend offers no GPUs` };
  }
  return {};
};

export const networkPolicy: BidStrategy = (spec, policy, profile) => {
  if (spec.network === 'egress' && !policy.allowEgress) {
    return { decline: 'network "egress" asked; this executor allows only network "none"' };
  }
  if (spec.network === 'none' && !profile.enforcesNetworkNone) {
    return {
      notes: [
        `network "none" is not enforced here: ${profile.platform === 'fargate' ? "the task's security group allows egress (deploy with the isolated network layout to enforce it)" : 'jobs share the host network'}`,
      ],
    };
  }
  return {};
};

export const outputLimitBounds: BidStrategy = (spec, policy) => {
  const { stdoutBytes, stderrBytes } = spec.outputLimits;
  const over = [
    ['stdoutBytes', stdoutBytes],
    ['stderrBytes', stderrBytes],
  ].filter(([, value]) => Number(value) > policy.maxOutputBytes);
  if (over.length === 0) return {};
  const asked = over.map(([name, value]) => `${name} ${formatBytes(Number(value))}`).join(' and ');
  return { decline: `${asked} asked; at most ${formatBytes(policy.maxOutputBytes)} per stream is stored` };
};

export const dataCapabilities: BidStrategy = (spec, _policy, profile) => {
  const missing: string[] = [];
  if (spec.inputs.length > 0 && !profile.supportsInputs) missing.push('inputs');
  if (spec.outputs.length > 0 && !profile.supportsOutputs) missing.push('outputs');
  if (spec.publish !== undefined && !profile.supportsPublish) missing.push('publish');
  if ((spec.volumes ?? []).length > 0 && !profile.supportsVolumes) missing.push('volumes');
  if (spec.outputs.some((output) => output.url !== undefined) && profile.deliversOutputs !== true)
    missing.push('output urls');
  if (missing.length === 0) return {};
  return {
    decline: `${missing.join(', ')} asked; the ${profile.platform} backend does not support ${missing.join(', ')}`,
  };
};

/**
 * Inputs and outputs a backend that supports them can serve: sources allowed and fetchable,
 * paths absolute and apart, not too many, and inputs that fit the disk the job gets.
 */
export const dataPolicy: BidStrategy = (spec, policy, profile, facts) => {
  if (spec.inputs.length === 0 && spec.outputs.length === 0 && (spec.volumes ?? []).length === 0) return {};
  // What the backend cannot serve at all, dataCapabilities declines.
  if (spec.inputs.length > 0 && !profile.supportsInputs) return {};
  if (spec.outputs.length > 0 && !profile.supportsOutputs) return {};
  const problems = dataProblems(spec, policy.inputAllow, policy.outputAllow ?? []);
  const notes: string[] = [];
  const sizes = facts.inputSizes ?? [];
  let known = 0;
  let atLeast = false;
  const large: string[] = [];
  spec.inputs.forEach((input, index) => {
    const size = input.content !== undefined ? { bytes: Buffer.byteLength(input.content) } : sizes[index];
    if (size?.missing)
      notes.push(
        `input ${input.url} is not there now; the job fails before it runs if it is still missing then`,
      );
    if (size?.bytes === undefined) return;
    known += size.bytes;
    atLeast ||= size.atLeast === true;
    if (size.bytes >= 1024 ** 3) large.push(`${input.url} ${formatBytes(size.bytes)}`);
  });
  const diskGiB = spec.resources.diskGiB ?? FARGATE_LIMITS.includedDiskGiB;
  if (known > diskGiB * 1024 ** 3) {
    problems.push(
      `inputs take ${atLeast ? 'at least ' : ''}${formatBytes(known)}${large.length > 0 ? ` (${large.join(', ')})` : ''}; the job gets ${diskGiB} GiB of disk (ask for more with resources.disk)`,
    );
  }
  if (profile.platform === 'fargate') {
    problems.push(...taskDataProblems(spec));
    notes.push(...taskDataNotes(spec));
  }
  if (profile.platform === 'process') {
    notes.push(
      'the process backend has no container: input and output paths are inside the job’s own directory, $FERRY_ROOT (/data/in.csv is $FERRY_ROOT/data/in.csv), where it runs; inputs are read-only by their permissions only',
    );
  }
  return problems.length > 0 ? { decline: problems.join('; '), notes } : { notes };
};

export const publishPolicy: BidStrategy = (spec, policy) => {
  const destination = spec.publish?.destination;
  if (destination === undefined) return {};
  if (policy.publishAllow.some((pattern) => globToRegExp(pattern).test(destination))) return {};
  return {
    decline:
      policy.publishAllow.length === 0
        ? `publish to ${destination} asked; this executor publishes nowhere`
        : `publish to ${destination} asked; allowed destinations match: ${policy.publishAllow.join(', ')}`,
  };
};

/**
 * What RunTask would refuse, measured on what the ECS backend will send: the job's command
 * and environment travel in the task overrides, its labels as task tags.
 */
export const fargateRequestLimits: BidStrategy = (spec, _policy, profile) => {
  if (profile.platform !== 'fargate') return {};
  const problems: string[] = [];
  const fit = fitFargate(spec.resources);
  // Unfitted, the largest size spells longest: the overrides are not undercounted.
  const size = fit.fits
    ? { cpu: String(fit.size.cpuUnits), memory: String(fit.size.memoryMiB), ephemeralStorageGiB: fit.diskGiB }
    : { cpu: '16384', memory: '122880', ephemeralStorageGiB: FARGATE_LIMITS.maxDiskGiB };
  const length = overridesLength(taskOverrides(spec, LONGEST_EXECUTION_ID, size, LONGEST_UPLOAD_SECRET));
  const limit = FARGATE_RULES.overridesMaxChars;
  if (length > limit) {
    problems.push(
      `${spec.inputs.length > 0 ? 'command, env and inputs' : 'command and env'} take ${length} characters of RunTask overrides with Ferry's own settings; Fargate takes at most ${limit}, so shorten them by ${length - limit}${spec.inputs.some((input) => input.content !== undefined) ? ' (inline content counts: a large input belongs in S3)' : ''}`,
    );
  }
  const containers = taskContainerCount(spec);
  const steps = stepsOf(spec).length;
  // More steps than any Fargate job may have is stepLimit's to say; this is the stage container's one.
  if (containers > CONTAINERS_PER_TASK && steps <= profile.maxSteps) {
    problems.push(
      `${steps} steps asked; with its inputs, outputs or volumes a job's Fargate task holds ${containers} containers (Ferry's init, stage and publisher, and one per step), and ECS takes at most ${CONTAINERS_PER_TASK}: at most ${CONTAINERS_PER_TASK - 3} steps with data`,
    );
  }
  const ownTags = executionTags(LONGEST_EXECUTION_ID, {}).length;
  const room = FARGATE_RULES.tagsPerResource - ownTags;
  const labels = Object.entries(spec.labels);
  if (labels.length > room) {
    problems.push(
      `${labels.length} labels asked; a Fargate task carries at most ${room} (ECS takes ${FARGATE_RULES.tagsPerResource} tags, ${ownTags} of them Ferry's own)`,
    );
  }
  for (const [key, value] of labels) {
    problems.push(...tagViolations({ key: labelTagKey(key), value }, `label ${key}`));
  }
  return problems.length > 0 ? { decline: problems.join('; ') } : {};
};

export const DEFAULT_STRATEGIES: readonly BidStrategy[] = [
  publishPolicy,
  imagePolicy,
  registryPolicy,
  stepLimit,
  timeoutBounds,
  gpuSupport,
  networkPolicy,
  outputLimitBounds,
  dataCapabilities,
  dataPolicy,
  fargateRequestLimits,
];

export type ConstraintFit =
  | { readonly fits: true; readonly constraints: ResolvedConstraints }
  | { readonly fits: false; readonly reason: string };

/** Maps the job's resource request onto what the platform can give. */
export function resolveConstraints(spec: JobSpec, profile: PlatformProfile): ConstraintFit {
  const { cpu, memoryMiB, diskGiB } = spec.resources;
  if (profile.platform === 'fargate') {
    const fit = fitFargate(spec.resources);
    if (!fit.fits) return fit;
    return {
      fits: true,
      constraints: {
        platform: 'fargate',
        cpu: fit.size.cpuUnits / 1024,
        memoryMiB: fit.size.memoryMiB,
        diskGiB: fit.diskGiB,
        fargate: {
          cpu: String(fit.size.cpuUnits),
          memory: String(fit.size.memoryMiB),
          ephemeralStorageGiB: fit.diskGiB,
        },
        notes: [],
      },
    };
  }
  const wantCpu = cpu ?? Math.min(LOCAL_DEFAULT_CPU, profile.maxCpu);
  const wantMemory = Math.ceil(memoryMiB ?? Math.min(LOCAL_DEFAULT_MEMORY_MIB, profile.maxMemoryMiB));
  const problems: string[] = [];
  if (wantCpu > profile.maxCpu)
    problems.push(`cpu ${wantCpu} vCPU asked, this host offers at most ${profile.maxCpu} vCPU`);
  if (wantMemory > profile.maxMemoryMiB) {
    problems.push(
      `memory ${formatMiB(wantMemory)} asked, this host offers at most ${formatMiB(profile.maxMemoryMiB)}`,
    );
  }
  if (problems.length > 0) return { fits: false, reason: problems.join('; ') };
  const notes: string[] = [];
  if (profile.platform === 'docker' && diskGiB !== undefined) {
    notes.push('disk is not limited by the Docker backend');
  }
  if (profile.platform === 'process') {
    notes.push('the process backend does not isolate jobs: cpu, memory, disk and network are not enforced');
  }
  return {
    fits: true,
    constraints: {
      platform: profile.platform,
      cpu: wantCpu,
      memoryMiB: wantMemory,
      diskGiB: diskGiB ?? FARGATE_LIMITS.includedDiskGiB,
      notes,
    },
  };
}

export interface BidInput {
  readonly spec: JobSpec;
  readonly policy: BidPolicy;
  readonly profile: PlatformProfile;
  /** The executor's whole capacity: a job larger than it could never start. */
  readonly budget?: { readonly maxCpu: number; readonly maxMemoryMiB: number };
  readonly strategies?: readonly BidStrategy[];
  /** Facts gathered before bidding; absent ones are taken as false. */
  readonly facts?: Partial<BidFacts>;
  /** Supplies the queue part of the estimate once the constraints are known. */
  readonly queueEstimate: (
    constraints: ResolvedConstraints,
  ) => Estimate['queue'] & { waitSeconds: number; waitAtMostSeconds?: number };
  readonly expiresAt: string;
}

export function makeBid(input: BidInput): Bid {
  const { spec, policy, profile } = input;
  const declines: string[] = [];
  const notes: string[] = [];
  const facts: BidFacts = {
    presentImages: input.facts?.presentImages ?? new Set(),
    ...(input.facts?.inputSizes === undefined ? {} : { inputSizes: input.facts.inputSizes }),
  };
  for (const strategy of input.strategies ?? DEFAULT_STRATEGIES) {
    const verdict = strategy(spec, policy, profile, facts);
    if (verdict.decline !== undefined) declines.push(verdict.decline);
    notes.push(...(verdict.notes ?? []));
  }
  const fit = resolveConstraints(spec, profile);
  if (!fit.fits) declines.unshift(fit.reason);
  else if (input.budget !== undefined) {
    const { cpu, memoryMiB } = fit.constraints;
    const over: string[] = [];
    if (cpu > input.budget.maxCpu) over.push(`${cpu} vCPU`);
    if (memoryMiB > input.budget.maxMemoryMiB) over.push(formatMiB(memoryMiB));
    if (over.length > 0) {
      declines.unshift(
        `the job needs ${over.join(' and ')}; this executor's whole capacity is ${input.budget.maxCpu} vCPU and ${formatMiB(input.budget.maxMemoryMiB)}`,
      );
    }
  }
  if (declines.length > 0 || !fit.fits) {
    return { accepted: false, reason: declines.join('; ') };
  }
  const constraints = { ...fit.constraints, notes: [...fit.constraints.notes, ...notes] };
  const costPerHourUsd = fargateCostPerHour(constraints.cpu, constraints.memoryMiB, constraints.diskGiB);
  const queue = input.queueEstimate(constraints);
  const size = `${constraints.cpu} vCPU, ${formatMiB(constraints.memoryMiB)}`;
  return {
    accepted: true,
    reason:
      profile.platform === 'fargate'
        ? `fits Fargate size ${size} with ${constraints.diskGiB} GiB ephemeral storage`
        : `fits this host (${profile.platform} backend) with ${size}`,
    constraints,
    estimate: {
      costPerHourUsd,
      maxCostUsd: Math.round(costPerHourUsd * (spec.timeoutSeconds / 3600) * 1e6) / 1e6,
      queueWaitSeconds: queue.waitSeconds,
      ...(queue.waitAtMostSeconds === undefined ? {} : { queueWaitAtMostSeconds: queue.waitAtMostSeconds }),
      queue: { runningJobs: queue.runningJobs, queuedJobs: queue.queuedJobs },
    },
    expiresAt: input.expiresAt,
  };
}
