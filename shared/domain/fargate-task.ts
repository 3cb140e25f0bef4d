// What Ferry asks ECS for one execution, beyond its task definition: the task overrides
// (size, the job's argv and environment, the publisher's settings and upload secret) and the
// task's tags. Pure, so the bid can measure exactly what the ECS backend will send.
import type { JobSpec } from './job-spec.ts';
import { JOB_CONTAINER } from './task-event.ts';

export const INIT_CONTAINER = 'ferry-init';
export const PUBLISHER_CONTAINER = 'ferry-publisher';
/** The task-local volume the containers share, and where it is mounted. */
export const SHARED_VOLUME = 'ferry';
export const SHARED_PATH = '/ferry';

/** The task-level size of one execution, as ECS spells it. */
export interface FargateTaskSize {
  readonly cpu: string;
  readonly memory: string;
  readonly ephemeralStorageGiB: number;
}

export interface KeyValue {
  readonly name: string;
  readonly value: string;
}

export interface FargateTaskOverrides {
  readonly cpu: string;
  readonly memory: string;
  readonly ephemeralStorage?: { readonly sizeInGiB: number };
  containerOverrides: {
    readonly name: string;
    command?: string[];
    environment: KeyValue[];
  }[];
}

export interface TaskTag {
  readonly key: string;
  readonly value: string;
}

/** Longer than any execution id Ferry makes: a bid measures with it before the id exists. */
export const LONGEST_EXECUTION_ID = 'x'.repeat(64);

/** The label `key` as a task tag key. */
export const labelTagKey = (key: string): string => `ferry:label:${key}`;

/**
 * The limits the publisher applies: the streams', and the outputs' only when the job has any
 * (every character counts against the overrides limit).
 */
function publisherLimits(spec: Pick<JobSpec, 'outputLimits'> & Partial<Pick<JobSpec, 'outputs'>>) {
  const { stdoutBytes, stderrBytes, inlineBytes, keep } = spec.outputLimits;
  return (spec.outputs?.length ?? 0) > 0
    ? spec.outputLimits
    : { stdoutBytes, stderrBytes, inlineBytes, keep };
}

export function taskOverrides(
  spec: Pick<JobSpec, 'command' | 'env' | 'timeoutSeconds' | 'outputLimits' | 'workdir'> &
    Partial<Pick<JobSpec, 'outputs'>>,
  executionId: string,
  size: FargateTaskSize,
  /** The launch attempt's upload secret: the publisher's alone, never the job's, never a tag. */
  uploadSecret: string,
): FargateTaskOverrides {
  return {
    cpu: size.cpu,
    memory: size.memory,
    // Fargate gives 20 GiB without asking, and refuses an override below 21.
    ...(size.ephemeralStorageGiB > 20 ? { ephemeralStorage: { sizeInGiB: size.ephemeralStorageGiB } } : {}),
    containerOverrides: [
      {
        name: JOB_CONTAINER,
        // The wrapper's own arguments, then the job's argv untouched.
        command: [
          '--io',
          `${SHARED_PATH}/io`,
          '--timeout',
          String(spec.timeoutSeconds),
          // RunTask cannot set a container's working directory; the wrapper enters it.
          ...(spec.workdir === undefined ? [] : ['--workdir', spec.workdir]),
          '--',
          ...spec.command,
        ],
        environment: Object.entries(spec.env).map(([name, value]) => ({ name, value })),
      },
      {
        name: PUBLISHER_CONTAINER,
        environment: [
          { name: 'FERRY_EXECUTION_ID', value: executionId },
          { name: 'FERRY_OUTPUT_LIMITS', value: JSON.stringify(publisherLimits(spec)) },
          { name: 'FERRY_UPLOAD_SECRET', value: uploadSecret },
        ],
      },
    ],
  };
}

/** Ferry's own tag first, then one per label: every label is carried, none is dropped. */
export function executionTags(executionId: string, labels: Readonly<Record<string, string>>): TaskTag[] {
  return [
    { key: 'ferry:execution', value: executionId },
    ...Object.entries(labels).map(([key, value]) => ({ key: labelTagKey(key), value })),
  ];
}
