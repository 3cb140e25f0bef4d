// Fargate's documented rules for what Ferry sends to ECS, where emulators are lenient: a
// task definition as RegisterTaskDefinition takes it and a RunTask request. Each check
// returns the violations in words (empty when Fargate would take it). Pure and shaped like
// the ECS API, so the adapter, its tests and an emulator can run the same checks.
import { FARGATE_LIMITS, FARGATE_SIZES } from './fargate.ts';

export const FARGATE_RULES = Object.freeze({
  /** RunTask's overrides, JSON formatting included. */
  overridesMaxChars: 8192,
  tagsPerResource: 50,
  tagKeyMaxChars: 128,
  tagValueMaxChars: 256,
  subnetsMax: 16,
  securityGroupsMax: 5,
  tasksPerRunTask: 10,
  containersPerTaskDefinition: 10,
});

/** Letters, numbers and spaces in any script, and `_ . : / = + - @`. */
const TAG_TEXT = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;
const RESERVED_PREFIX = /^aws:/i;

type Maybe<T> = T | undefined;

export interface ContainerRules {
  readonly name?: Maybe<string>;
  readonly image?: Maybe<string>;
  readonly essential?: Maybe<boolean>;
  readonly memory?: Maybe<number>;
  readonly memoryReservation?: Maybe<number>;
  readonly healthCheck?: Maybe<unknown>;
  readonly dependsOn?: Maybe<readonly { containerName?: Maybe<string>; condition?: Maybe<string> }[]>;
  readonly mountPoints?: Maybe<readonly { sourceVolume?: Maybe<string> }[]>;
}

export interface TaskDefinitionRules {
  readonly family?: Maybe<string>;
  readonly requiresCompatibilities?: Maybe<readonly string[]>;
  readonly networkMode?: Maybe<string>;
  readonly cpu?: Maybe<string>;
  readonly memory?: Maybe<string>;
  readonly ephemeralStorage?: Maybe<{ sizeInGiB?: Maybe<number> }>;
  readonly volumes?: Maybe<readonly { name?: Maybe<string>; host?: Maybe<{ sourcePath?: Maybe<string> }> }[]>;
  readonly containerDefinitions?: Maybe<readonly ContainerRules[]>;
}

export interface TagRules {
  readonly key?: Maybe<string>;
  readonly value?: Maybe<string>;
}

export interface RunTaskRules {
  readonly count?: Maybe<number>;
  readonly launchType?: Maybe<string>;
  readonly capacityProviderStrategy?: Maybe<readonly { capacityProvider?: Maybe<string> }[]>;
  readonly networkConfiguration?: Maybe<{
    awsvpcConfiguration?: Maybe<{
      subnets?: Maybe<readonly string[]>;
      securityGroups?: Maybe<readonly string[]>;
    }>;
  }>;
  readonly overrides?: Maybe<{
    cpu?: Maybe<string>;
    memory?: Maybe<string>;
    ephemeralStorage?: Maybe<{ sizeInGiB?: Maybe<number> }>;
    containerOverrides?: Maybe<readonly { name?: Maybe<string> }[]>;
  }>;
  readonly tags?: Maybe<readonly TagRules[]>;
}

const isFargatePair = (cpu: Maybe<string>, memory: Maybe<string>): boolean =>
  FARGATE_SIZES.some((s) => String(s.cpuUnits) === cpu && String(s.memoryMiB) === memory);

function sizeViolations(
  where: string,
  cpu: Maybe<string>,
  memory: Maybe<string>,
  storage: Maybe<number>,
): string[] {
  const problems: string[] = [];
  if (!isFargatePair(cpu, memory)) {
    problems.push(`${where}: cpu ${cpu ?? '(none)'} with memory ${memory ?? '(none)'} is not a Fargate size`);
  }
  return [...problems, ...storageViolations(where, storage)];
}

function storageViolations(where: string, storage: Maybe<number>): string[] {
  const problems: string[] = [];
  if (
    storage !== undefined &&
    (storage < FARGATE_LIMITS.minDiskOverrideGiB ||
      storage > FARGATE_LIMITS.maxDiskGiB ||
      !Number.isInteger(storage))
  ) {
    problems.push(
      `${where}: ephemeral storage ${storage} GiB, Fargate takes ${FARGATE_LIMITS.minDiskOverrideGiB} to ${FARGATE_LIMITS.maxDiskGiB} GiB`,
    );
  }
  return problems;
}

/** What RegisterTaskDefinition on Fargate would refuse, or what would never start there. */
export function taskDefinitionViolations(definition: TaskDefinitionRules): string[] {
  const problems: string[] = [];
  if (!definition.requiresCompatibilities?.includes('FARGATE')) {
    problems.push('requiresCompatibilities does not include FARGATE');
  }
  if (definition.networkMode !== 'awsvpc') {
    problems.push(`networkMode ${definition.networkMode ?? '(none)'}, Fargate requires awsvpc`);
  }
  problems.push(
    ...sizeViolations('task', definition.cpu, definition.memory, definition.ephemeralStorage?.sizeInGiB),
  );
  const volumes = new Set<string>();
  for (const volume of definition.volumes ?? []) {
    if (volume.name === undefined) problems.push('a volume has no name');
    else if (volumes.has(volume.name)) problems.push(`volume ${volume.name} is declared twice`);
    else volumes.add(volume.name);
    if (volume.host?.sourcePath !== undefined) {
      problems.push(`volume ${volume.name}: Fargate has no host paths (${volume.host.sourcePath})`);
    }
  }

  const containers = definition.containerDefinitions ?? [];
  if (containers.length === 0) problems.push('no container definitions');
  if (containers.length > FARGATE_RULES.containersPerTaskDefinition) {
    problems.push(
      `${containers.length} container definitions, a task definition takes at most ${FARGATE_RULES.containersPerTaskDefinition}`,
    );
  }
  if (containers.length > 0 && !containers.some((c) => c.essential !== false)) {
    problems.push('no container is essential');
  }
  const byName = new Map<string, ContainerRules>();
  for (const container of containers) {
    if (container.name === undefined || container.name === '') problems.push('a container has no name');
    else if (byName.has(container.name)) problems.push(`container ${container.name} is defined twice`);
    else byName.set(container.name, container);
    if (container.image === undefined || container.image === '') {
      problems.push(`container ${container.name}: no image`);
    }
  }
  let reserved = 0;
  for (const container of containers) {
    const name = container.name ?? '(unnamed)';
    reserved += container.memory ?? container.memoryReservation ?? 0;
    for (const mount of container.mountPoints ?? []) {
      if (mount.sourceVolume === undefined || !volumes.has(mount.sourceVolume)) {
        problems.push(
          `container ${name} mounts volume ${mount.sourceVolume ?? '(none)'}, which is not declared`,
        );
      }
    }
    for (const dependency of container.dependsOn ?? []) {
      const target = dependency.containerName ?? '(none)';
      const on = byName.get(target);
      const condition = dependency.condition ?? '(none)';
      if (on === undefined) {
        problems.push(`container ${name} depends on ${target}, which is not defined`);
        continue;
      }
      if (target === name) problems.push(`container ${name} depends on itself`);
      if (!['START', 'COMPLETE', 'SUCCESS', 'HEALTHY'].includes(condition)) {
        problems.push(`container ${name} depends on ${target} with condition ${condition}`);
      } else if ((condition === 'COMPLETE' || condition === 'SUCCESS') && on.essential !== false) {
        // An essential container that exits ends the task, so waiting for its exit cannot work.
        problems.push(`container ${name} waits for ${target} to ${condition}, but ${target} is essential`);
      } else if (condition === 'HEALTHY' && on.healthCheck === undefined) {
        problems.push(
          `container ${name} waits for ${target} to be HEALTHY, but ${target} has no health check`,
        );
      }
    }
  }
  const taskMemory = Number(definition.memory);
  if (Number.isFinite(taskMemory) && reserved > taskMemory) {
    problems.push(`containers reserve ${reserved} MiB, more than the task's ${taskMemory} MiB`);
  }
  return problems;
}

/** Characters of the overrides as RunTask counts them: the JSON, formatting included. */
export const overridesLength = (overrides: unknown): number => JSON.stringify(overrides ?? {}).length;

/** Why ECS would refuse one tag; `where` names it in the reason. */
export function tagViolations(tag: TagRules, where = `tag ${tag.key ?? '(none)'}`): string[] {
  const problems: string[] = [];
  const key = tag.key ?? '';
  const value = tag.value ?? '';
  if (key.length === 0 || key.length > FARGATE_RULES.tagKeyMaxChars) {
    problems.push(
      `${where}: key of ${key.length} characters, ECS takes 1 to ${FARGATE_RULES.tagKeyMaxChars}`,
    );
  }
  if (value.length > FARGATE_RULES.tagValueMaxChars) {
    problems.push(
      `${where}: value of ${value.length} characters, ECS takes at most ${FARGATE_RULES.tagValueMaxChars}`,
    );
  }
  for (const [part, text] of [
    ['key', key],
    ['value', value],
  ] as const) {
    if (!TAG_TEXT.test(text)) {
      problems.push(
        `${where}: ${part} has characters ECS tags cannot carry (letters, numbers, spaces and _ . : / = + - @ only)`,
      );
    }
    if (RESERVED_PREFIX.test(text)) problems.push(`${where}: ${part} starts with the reserved prefix aws:`);
  }
  return problems;
}

/** What RunTask would refuse; `definition`, when known, is checked against the overrides. */
export function runTaskViolations(request: RunTaskRules, definition?: TaskDefinitionRules): string[] {
  const problems: string[] = [];
  const count = request.count ?? 1;
  if (count < 1 || count > FARGATE_RULES.tasksPerRunTask) {
    problems.push(`count ${count}, RunTask starts 1 to ${FARGATE_RULES.tasksPerRunTask} tasks`);
  }
  const providers = request.capacityProviderStrategy ?? [];
  if (request.launchType !== undefined && providers.length > 0) {
    problems.push('both a launch type and a capacity provider strategy');
  } else if (request.launchType !== undefined && request.launchType !== 'FARGATE') {
    problems.push(`launch type ${request.launchType}, not FARGATE`);
  } else if (request.launchType === undefined && providers.length === 0) {
    problems.push('neither launch type FARGATE nor a Fargate capacity provider');
  }
  for (const provider of providers) {
    if (provider.capacityProvider !== 'FARGATE' && provider.capacityProvider !== 'FARGATE_SPOT') {
      problems.push(
        `capacity provider ${provider.capacityProvider ?? '(none)'}, not FARGATE or FARGATE_SPOT`,
      );
    }
  }

  const vpc = request.networkConfiguration?.awsvpcConfiguration;
  if (vpc === undefined) problems.push('no awsvpc network configuration');
  else {
    const subnets = vpc.subnets?.length ?? 0;
    if (subnets < 1 || subnets > FARGATE_RULES.subnetsMax) {
      problems.push(`${subnets} subnets, awsvpc takes 1 to ${FARGATE_RULES.subnetsMax}`);
    }
    const groups = vpc.securityGroups?.length ?? 0;
    if (groups > FARGATE_RULES.securityGroupsMax) {
      problems.push(`${groups} security groups, awsvpc takes at most ${FARGATE_RULES.securityGroupsMax}`);
    }
  }

  const overrides = request.overrides;
  if (overrides !== undefined) {
    const length = overridesLength(overrides);
    if (length > FARGATE_RULES.overridesMaxChars) {
      problems.push(
        `overrides of ${length} characters, RunTask takes at most ${FARGATE_RULES.overridesMaxChars}`,
      );
    }
    if (overrides.cpu !== undefined || overrides.memory !== undefined) {
      problems.push(
        ...sizeViolations(
          'overrides',
          overrides.cpu ?? definition?.cpu,
          overrides.memory ?? definition?.memory,
          overrides.ephemeralStorage?.sizeInGiB,
        ),
      );
    } else {
      problems.push(...storageViolations('overrides', overrides.ephemeralStorage?.sizeInGiB));
    }
    if (definition !== undefined) {
      const names = new Set((definition.containerDefinitions ?? []).map((c) => c.name));
      for (const container of overrides.containerOverrides ?? []) {
        if (!names.has(container.name)) {
          problems.push(`overrides name container ${container.name ?? '(none)'}, not in the task definition`);
        }
      }
    }
  }

  const tags = request.tags ?? [];
  const counted = tags.filter((t) => !RESERVED_PREFIX.test(t.key ?? ''));
  if (counted.length > FARGATE_RULES.tagsPerResource) {
    problems.push(`${counted.length} tags, ECS takes at most ${FARGATE_RULES.tagsPerResource} per task`);
  }
  const keys = new Set<string>();
  for (const tag of tags) {
    if (keys.has(tag.key ?? '')) problems.push(`tag ${tag.key} is given twice`);
    keys.add(tag.key ?? '');
    problems.push(...tagViolations(tag));
  }
  return problems;
}
