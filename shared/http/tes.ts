// The GA4GH Task Execution Service (TES) 1.1 as another way in to Ferry's core: a TES task is
// an execution, created through the same bid and dispatch as a /v1 job. This module maps a TES
// task document onto a Ferry job spec, and an execution (with its result, when there is one)
// back onto a TES task in the view asked for. Pure: the routes call the /v1 use cases.
import { z } from 'zod';
import type { Execution, OutputResult, ResultManifest } from '../domain/execution.ts';
import { JOB_LIMITS, LABEL_KEY, stepsOf } from '../domain/job-spec.ts';
import { ACTIVE_STATES, type ExecutionState } from '../domain/states.ts';
import { SPOT_RECLAIMED } from '../domain/task-event.ts';
import { ValidationError } from '../errors.ts';

export const TES_PREFIX = '/ga4gh/tes/v1';
export const TES_VERSION = '1.1.0';

export const TES_STATES = [
  'UNKNOWN',
  'QUEUED',
  'INITIALIZING',
  'RUNNING',
  'PAUSED',
  'COMPLETE',
  'EXECUTOR_ERROR',
  'SYSTEM_ERROR',
  'CANCELED',
  'PREEMPTED',
  'CANCELING',
] as const;
export type TesState = (typeof TES_STATES)[number];

export const TES_VIEWS = ['MINIMAL', 'BASIC', 'FULL'] as const;
export type TesView = (typeof TES_VIEWS)[number];

/** ListTasks' page size: 256 unless asked, and less than 2048 (TES 1.1). */
export const TES_PAGE_SIZE = Object.freeze({ min: 1, max: 2047, default: 256 });

const fileType = z.enum(['FILE', 'DIRECTORY']);

// What a client sends. The task's read-only fields (id, state, logs, creation_time) are taken
// and ignored, as a server does with what it sets itself; anything else unknown is an error.
const TesExecutorSchema = z.strictObject({
  image: z.string().min(1),
  command: z.array(z.string()).min(1),
  workdir: z.string().optional(),
  stdin: z.string().optional(),
  stdout: z.string().optional(),
  stderr: z.string().optional(),
  env: z.record(z.string(), z.string()).optional(),
  ignore_error: z.boolean().optional(),
});

const TesInputSchema = z.strictObject({
  name: z.string().optional(),
  description: z.string().optional(),
  url: z.string().optional(),
  path: z.string(),
  type: fileType.optional(),
  content: z.string().optional(),
  streamable: z.boolean().optional(),
});

const TesOutputSchema = z.strictObject({
  name: z.string().optional(),
  description: z.string().optional(),
  url: z.string(),
  path: z.string(),
  path_prefix: z.string().optional(),
  type: fileType.optional(),
});

const TesResourcesSchema = z.strictObject({
  cpu_cores: z.number().int().positive().optional(),
  preemptible: z.boolean().optional(),
  ram_gb: z.number().positive().optional(),
  disk_gb: z.number().positive().optional(),
  zones: z.array(z.string()).optional(),
  backend_parameters: z.record(z.string(), z.string()).optional(),
  backend_parameters_strict: z.boolean().optional(),
});

export const TesTaskSchema = z.strictObject({
  id: z.unknown().optional(),
  state: z.unknown().optional(),
  name: z.string().optional(),
  description: z.string().optional(),
  inputs: z.array(TesInputSchema).optional(),
  outputs: z.array(TesOutputSchema).optional(),
  resources: TesResourcesSchema.optional(),
  executors: z.array(TesExecutorSchema).min(1, 'a task runs at least one executor'),
  volumes: z.array(z.string()).optional(),
  tags: z.record(z.string(), z.string()).optional(),
  logs: z.unknown().optional(),
  creation_time: z.unknown().optional(),
});
export type TesTaskInput = z.output<typeof TesTaskSchema>;

// What the server answers, as the OpenAPI document publishes it. Fields a view leaves out are
// optional; no field is ever null.
const TesExecutorLogSchema = z.object({
  start_time: z.string().optional(),
  end_time: z.string().optional(),
  stdout: z.string().optional().describe('FULL view: the inline part of the stored stdout'),
  stderr: z.string().optional().describe('FULL view: the inline part of the stored stderr'),
  exit_code: z.number().int(),
});

export const TesTaskViewSchema = z.object({
  id: z.string(),
  state: z.enum(TES_STATES),
  name: z.string().optional(),
  description: z.string().optional(),
  inputs: z
    .array(
      z.object({
        url: z.string().optional(),
        path: z.string(),
        type: fileType,
        content: z.string().optional().describe('FULL view only'),
      }),
    )
    .optional(),
  outputs: z.array(z.object({ url: z.string(), path: z.string(), type: fileType })).optional(),
  resources: z
    .object({ cpu_cores: z.number().int(), ram_gb: z.number(), disk_gb: z.number() })
    .optional()
    .describe('what the task was given: its request rounded up to what the backend offers'),
  executors: z
    .array(
      z.object({
        image: z.string(),
        command: z.array(z.string()),
        workdir: z.string().optional(),
        env: z.record(z.string(), z.string()).optional(),
        ignore_error: z.boolean().optional(),
      }),
    )
    .optional(),
  volumes: z.array(z.string()).optional(),
  tags: z.record(z.string(), z.string()).optional(),
  logs: z
    .array(
      z.object({
        logs: z.array(TesExecutorLogSchema),
        start_time: z.string().optional(),
        end_time: z.string().optional(),
        outputs: z.array(z.object({ url: z.string(), path: z.string(), size_bytes: z.string() })),
        system_logs: z
          .array(z.string())
          .optional()
          .describe('FULL view: why it ended as it did, the bid’s notes'),
      }),
    )
    .optional(),
  creation_time: z.string().optional(),
});

export const TesListTasksSchema = z.object({
  tasks: z.array(TesTaskViewSchema),
  next_page_token: z.string().optional(),
});

export const TesCreateTaskSchema = z.object({ id: z.string() });
/** TES answers a cancel with an empty object. */
export const TesCancelTaskSchema = z.strictObject({});

export const TesServiceInfoSchema = z.object({
  id: z.string(),
  name: z.string(),
  type: z.object({ group: z.string(), artifact: z.literal('tes'), version: z.string() }),
  description: z.string().optional(),
  organization: z.object({ name: z.string(), url: z.string() }),
  version: z.string(),
  storage: z.array(z.string()),
  tesResources_backend_parameters: z.array(z.string()),
});

/** Ferry's job spec for a TES task, with what was dropped from it and why (for the server's log). */
export interface TesJob {
  readonly spec: Record<string, unknown>;
  readonly warnings: readonly string[];
}

export interface TesJobSettings {
  /** TES has no timeout: a task gets the longest this executor allows. */
  readonly maxTimeoutSeconds: number;
  /** TES has no network setting: a task reaches out where this executor lets jobs do so. */
  readonly allowEgress: boolean;
}

const GB = 1e9;

/**
 * The Ferry job spec for a TES task. What Ferry cannot do yet is refused here (400), naming the
 * TES field, rather than run differently from what was asked; the bid then judges the rest.
 */
export function jobOfTask(task: TesTaskInput, settings: TesJobSettings): TesJob {
  const problems: { field: string; message: string }[] = [];
  const warnings: string[] = [];
  const [executor] = task.executors;
  if (task.executors.length > JOB_LIMITS.steps) {
    problems.push({
      field: 'executors',
      message: `${task.executors.length} executors asked; a task runs at most ${JOB_LIMITS.steps}`,
    });
  }
  task.executors.forEach((each, index) => {
    for (const field of ['stdin', 'stdout', 'stderr'] as const) {
      if (each[field] !== undefined) {
        problems.push({
          field: `executors.${index}.${field}`,
          message: `redirecting ${field} to a file is not supported; the executor's ${field} is kept in the task's logs`,
        });
      }
    }
  });
  (task.outputs ?? []).forEach((output, index) => {
    if (output.path_prefix !== undefined) {
      problems.push({
        field: `outputs.${index}.path_prefix`,
        message: 'outputs chosen by a wildcard are not supported; name each file or directory',
      });
    }
  });
  const resources = task.resources ?? {};
  const parameters = Object.keys(resources.backend_parameters ?? {});
  if (parameters.length > 0) {
    const what = `backend_parameters ${parameters.join(', ')}: Ferry supports none`;
    if (resources.backend_parameters_strict === true) {
      problems.push({
        field: 'resources.backend_parameters',
        message: `${what} (backend_parameters_strict)`,
      });
    } else warnings.push(`${what}; ignored`);
  }
  if ((resources.zones ?? []).length > 0)
    warnings.push('resources.zones: ignored; Ferry places tasks itself');
  if (resources.preemptible === true) {
    warnings.push('resources.preemptible: the task runs on the capacity this executor is deployed with');
  }
  for (const [key, value] of Object.entries(task.tags ?? {})) {
    if (!LABEL_KEY.test(key) || key.length > JOB_LIMITS.labelKeyLength) {
      problems.push({
        field: `tags.${key}`,
        message: `a tag key is at most ${JOB_LIMITS.labelKeyLength} letters, digits, ".", "_", "/" or "-", starting with a letter or digit`,
      });
    } else if (value.length > JOB_LIMITS.labelValueLength) {
      problems.push({
        field: `tags.${key}`,
        message: `a tag value is at most ${JOB_LIMITS.labelValueLength} characters`,
      });
    }
  }
  if (problems.length > 0 || executor === undefined) {
    throw new ValidationError(
      `Ferry cannot run this task: ${problems.map((p) => `${p.field}: ${p.message}`).join('; ')}`,
      problems,
    );
  }
  // Several executors, or one whose failure is ignored, are a job's steps.
  const stepped = task.executors.length > 1 || executor.ignore_error === true;
  const stepOf = (each: (typeof task.executors)[number]) => ({
    image: each.image,
    command: each.command,
    ...(each.env === undefined ? {} : { env: each.env }),
    ...(each.workdir === undefined ? {} : { workdir: each.workdir }),
  });
  const spec: Record<string, unknown> = {
    ...(task.name === undefined || task.name === '' ? {} : { name: task.name }),
    ...(task.description === undefined || task.description === '' ? {} : { description: task.description }),
    ...(stepped
      ? {
          steps: task.executors.map((each) => ({
            ...stepOf(each),
            ...(each.ignore_error === true ? { ignoreError: true } : {}),
          })),
        }
      : stepOf(executor)),
    resources: {
      ...(resources.cpu_cores === undefined ? {} : { cpu: resources.cpu_cores }),
      ...(resources.ram_gb === undefined ? {} : { memory: Math.ceil((resources.ram_gb * GB) / 2 ** 20) }),
      ...(resources.disk_gb === undefined ? {} : { disk: Math.ceil((resources.disk_gb * GB) / 2 ** 30) }),
    },
    timeoutSeconds: settings.maxTimeoutSeconds,
    network: settings.allowEgress ? 'egress' : 'none',
    inputs: (task.inputs ?? []).map((input) => ({
      // "If content is not empty, url must be ignored."
      ...(input.content !== undefined && input.content !== ''
        ? { content: input.content }
        : { url: input.url ?? '' }),
      path: input.path,
      type: input.type ?? 'FILE',
    })),
    ...((task.outputs ?? []).length === 0
      ? {}
      : {
          outputs: (task.outputs ?? []).map((output) => ({
            path: output.path,
            type: output.type ?? 'FILE',
            url: output.url,
          })),
        }),
    ...((task.volumes ?? []).length === 0 ? {} : { volumes: task.volumes }),
    ...(Object.keys(task.tags ?? {}).length === 0 ? {} : { labels: task.tags }),
  };
  return { spec, warnings };
}

/** The TES state of an execution. */
export function tesStateOf(
  execution: Pick<Execution, 'state' | 'exitCode' | 'reason' | 'stopRequested'>,
): TesState {
  const cancelling = execution.stopRequested?.intent === 'cancel';
  switch (execution.state) {
    case 'OFFERED':
    case 'QUEUED':
      return 'QUEUED';
    case 'LAUNCHING':
      return cancelling ? 'CANCELING' : 'INITIALIZING';
    case 'RUNNING':
      return cancelling ? 'CANCELING' : 'RUNNING';
    case 'COMPLETED':
      return execution.exitCode === 0 ? 'COMPLETE' : 'EXECUTOR_ERROR';
    case 'TIMED_OUT':
      return 'EXECUTOR_ERROR';
    case 'FAILED':
      return (execution.reason ?? '').startsWith(SPOT_RECLAIMED) ? 'PREEMPTED' : 'SYSTEM_ERROR';
    case 'DECLINED':
      return 'SYSTEM_ERROR';
    case 'CANCELLED':
    case 'BID_REJECTED':
    case 'EXPIRED':
      return 'CANCELED';
  }
}

/** The Ferry states whose executions may be in `state`; filter on tesStateOf for the rest. */
export function ferryStatesOf(state: TesState): ExecutionState[] {
  switch (state) {
    case 'QUEUED':
      return ['OFFERED', 'QUEUED'];
    case 'INITIALIZING':
      return ['LAUNCHING'];
    case 'RUNNING':
      return ['RUNNING'];
    case 'CANCELING':
      return [...ACTIVE_STATES];
    case 'COMPLETE':
      return ['COMPLETED'];
    case 'EXECUTOR_ERROR':
      return ['COMPLETED', 'TIMED_OUT'];
    case 'SYSTEM_ERROR':
      return ['FAILED', 'DECLINED'];
    case 'PREEMPTED':
      return ['FAILED'];
    case 'CANCELED':
      return ['CANCELLED', 'BID_REJECTED', 'EXPIRED'];
    case 'UNKNOWN':
    case 'PAUSED':
      return [];
  }
}

/** A TES task as this server answers it; absent fields are left out, never null. */
export interface TesTask {
  readonly id: string;
  readonly state: TesState;
  readonly name?: string;
  readonly description?: string;
  readonly inputs?: readonly Record<string, unknown>[];
  readonly outputs?: readonly Record<string, unknown>[];
  readonly resources?: Record<string, unknown>;
  readonly executors?: readonly Record<string, unknown>[];
  readonly volumes?: readonly string[];
  readonly tags?: Readonly<Record<string, string>>;
  readonly logs?: readonly Record<string, unknown>[];
  readonly creation_time?: string;
}

const gb = (bytes: number): number => Math.round((bytes / GB) * 1000) / 1000;

/** What a view shows beside the execution and its stored result. */
export interface TaskViewExtras {
  /** FULL view of a task with several executors: each one's part of the stored output. */
  readonly stepOutput?: readonly { readonly stdout: string; readonly stderr: string }[];
  /** What kept parts of the stored result from the view (the FULL view's system_logs). */
  readonly notes?: readonly string[];
}

/**
 * An execution as a TES task in `view`. `manifest` (its stored result, when there is one) gives
 * the executor's output in the FULL view.
 */
export function taskOf(
  execution: Execution,
  view: TesView,
  manifest?: ResultManifest,
  more: TaskViewExtras = {},
): TesTask {
  const state = tesStateOf(execution);
  if (view === 'MINIMAL') return { id: execution.id, state };
  const { spec } = execution;
  const full = view === 'FULL';
  const resolved = execution.bid.constraints;
  const delivered = spec.outputs.flatMap((output) =>
    output.url === undefined ? [] : [{ ...output, url: output.url }],
  );
  const executors = stepsOf(spec).map((step) => ({
    image: step.image,
    command: [...step.command],
    ...(step.workdir === undefined ? {} : { workdir: step.workdir }),
    ...(Object.keys(step.env).length === 0 ? {} : { env: step.env }),
    ...(step.ignoreError ? { ignore_error: true } : {}),
  }));
  const resources =
    resolved === undefined
      ? undefined
      : {
          cpu_cores: Math.max(1, Math.ceil(resolved.cpu)),
          ram_gb: gb(resolved.memoryMiB * 2 ** 20),
          disk_gb: gb(resolved.diskGiB * 2 ** 30),
        };
  return {
    id: execution.id,
    state,
    ...(spec.name === undefined ? {} : { name: spec.name }),
    ...(spec.description === undefined ? {} : { description: spec.description }),
    ...(spec.inputs.length === 0
      ? {}
      : {
          inputs: spec.inputs.map((input) => ({
            ...(input.url === undefined ? {} : { url: input.url }),
            path: input.path,
            type: input.type,
            ...(full && input.content !== undefined ? { content: input.content } : {}),
          })),
        }),
    // A TES output is one delivered to its url; Ferry's others are kept with the result only.
    ...(delivered.length === 0
      ? {}
      : { outputs: delivered.map((output) => ({ url: output.url, path: output.path, type: output.type })) }),
    ...(resources === undefined ? {} : { resources }),
    executors,
    ...((spec.volumes ?? []).length === 0 ? {} : { volumes: [...(spec.volumes ?? [])] }),
    ...(Object.keys(spec.labels).length === 0 ? {} : { tags: spec.labels }),
    ...(execution.startedAt === undefined && execution.endedAt === undefined
      ? {}
      : { logs: [taskLog(execution, full, manifest, more)] }),
    creation_time: execution.createdAt,
  };
}

function taskLog(
  execution: Execution,
  full: boolean,
  manifest: ResultManifest | undefined,
  { stepOutput, notes = [] }: TaskViewExtras,
): Record<string, unknown> {
  const exitCode = execution.exitCode ?? manifest?.exitCode ?? null;
  const inline = (stream: ResultManifest['stdout'] | undefined) =>
    stream === undefined
      ? ''
      : stream.inlineEncoding === 'utf8'
        ? stream.inline
        : Buffer.from(stream.inline, 'base64').toString('utf8');
  // A task of several executors has a log for each that ran, from its stored result.
  const executorLog =
    manifest?.steps !== undefined
      ? manifest.steps.map((step, index) => ({
          ...(step.startedAt === null ? {} : { start_time: step.startedAt }),
          end_time: step.endedAt,
          ...(full
            ? { stdout: stepOutput?.[index]?.stdout ?? '', stderr: stepOutput?.[index]?.stderr ?? '' }
            : {}),
          exit_code: step.exitCode ?? (step.signal === null ? 1 : 128),
        }))
      : exitCode === null
        ? []
        : [
            {
              ...(execution.startedAt === undefined ? {} : { start_time: execution.startedAt }),
              ...(execution.endedAt === undefined ? {} : { end_time: execution.endedAt }),
              ...(full ? { stdout: inline(manifest?.stdout), stderr: inline(manifest?.stderr) } : {}),
              exit_code: exitCode,
            },
          ];
  const systemLogs = [
    ...(execution.reason === undefined ? [] : [execution.reason]),
    ...(execution.bid.constraints?.notes ?? []),
    ...notes,
  ];
  return {
    logs: executorLog,
    ...(execution.startedAt === undefined ? {} : { start_time: execution.startedAt }),
    ...(execution.endedAt === undefined ? {} : { end_time: execution.endedAt }),
    outputs: (manifest?.outputs ?? []).flatMap(deliveredFiles),
    ...(full && systemLogs.length > 0 ? { system_logs: systemLogs } : {}),
  };
}

/** The files an output delivered to its url, as TES lists them (sizes as text, as TES has them). */
function deliveredFiles(output: OutputResult): { url: string; path: string; size_bytes: string }[] {
  const url = output.deliveredTo;
  if (url === undefined) return [];
  if (output.type === 'FILE') return [{ url, path: output.path, size_bytes: String(output.bytes) }];
  const join = (base: string, relative: string) => `${base.replace(/\/+$/, '')}/${relative}`;
  return (output.entries ?? []).map((entry) => ({
    url: join(url, entry.path.split('/').map(encodeURIComponent).join('/')),
    path: join(output.path, entry.path),
    size_bytes: String(entry.bytes),
  }));
}

/** GET /service-info: the GA4GH service-info document, with TES's own parts. */
export function serviceInfo(options: {
  readonly version: string;
  readonly backend: string;
  /** Where this server answers: the organization's address, as far as a caller can tell. */
  readonly url: string;
  /** The storage inputs may come from (FERRY_INPUT_ALLOW). */
  readonly storage: readonly string[];
}) {
  return {
    id: 'ferry.tes',
    name: 'Ferry',
    type: { group: 'org.ga4gh', artifact: 'tes', version: TES_VERSION },
    description: `Ferry runs each task as a container job on its ${options.backend} backend, once its bid is accepted.`,
    organization: { name: 'Ferry', url: options.url },
    version: options.version,
    storage: [...options.storage],
    tesResources_backend_parameters: [],
  };
}
