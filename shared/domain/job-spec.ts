// The job spec: what a caller asks Ferry to run. The zod schema is the single source of
// truth for validation, the TypeScript types and the OpenAPI document.
import { z } from 'zod';
import { ValidationError } from '../errors.ts';
import { GiB, MiB, parseSize, SIZE_PATTERN } from './units.ts';

export const JOB_LIMITS = Object.freeze({
  commandArgs: 4096,
  commandArgBytes: 128 * 1024,
  commandTotalBytes: 256 * 1024,
  envEntries: 256,
  envValueBytes: 32 * 1024,
  nameLength: 256,
  descriptionLength: 4096,
  labels: 64,
  labelKeyLength: 63,
  labelValueLength: 256,
  /** What a spec may list at all; the bid declines more than the executor serves. */
  inputs: 1000,
  outputs: 1000,
  urlLength: 2048,
  /** Inline `content` of one input, and of all of them together: it travels in the record. */
  inputContentBytes: 64 * 1024,
  inputsContentBytes: 128 * 1024,
  imageLength: 512,
  /** Steps of one job: each its own container, one after another. */
  steps: 16,
  volumes: 64,
  pathLength: 1024,
  outputStreamBytesMax: 1024 * GiB,
  inlineBytesMax: 1 * MiB,
});

export const DEFAULT_OUTPUT_LIMITS = Object.freeze({
  stdoutBytes: 10 * MiB,
  stderrBytes: 10 * MiB,
  inlineBytes: 4 * 1024,
  keep: 'head+tail' as const,
  outputBytes: 1 * GiB,
  outputsBytes: 4 * GiB,
  outputFiles: 10_000,
});

export const DEFAULT_TIMEOUT_SECONDS = 3600;

const byteLength = (text: string): number => Buffer.byteLength(text, 'utf8');

/** Size text as the OpenAPI document shows it; parseSize applies the same pattern. */
const sizeText = z.string().meta({ pattern: SIZE_PATTERN.source });

/** A size in `unit` (MiB for memory, GiB for disk) given as a number or as text with units. */
const size = (unitBytes: number, unitName: string) =>
  z.union([z.number(), sizeText]).transform((value, ctx) => {
    const bytes = parseSize(value, unitBytes);
    if (bytes === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `not a size: ${JSON.stringify(value)} (use a number of ${unitName} or text such as "512MiB", "2GiB")`,
      });
      return z.NEVER;
    }
    if (bytes <= 0) {
      ctx.addIssue({ code: 'custom', message: `must be greater than zero, got ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    // A size beyond floating point would be stored as Infinity, which JSON writes as null.
    if (!Number.isFinite(bytes)) {
      ctx.addIssue({ code: 'custom', message: `is too large, got ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    return bytes / unitBytes;
  });

/** A byte count as a whole number (at most `max`, as the document says) or as text with units. */
const byteCount = (max: number) =>
  z
    .union([z.number().meta({ type: 'integer', minimum: 0, maximum: max }), sizeText])
    .transform((value, ctx) => {
      const bytes = parseSize(value, 1);
      if (bytes === undefined || !Number.isInteger(bytes) || bytes < 0) {
        ctx.addIssue({
          code: 'custom',
          message: `not a byte count: ${JSON.stringify(value)} (use a whole number of bytes or text such as "10MiB")`,
        });
        return z.NEVER;
      }
      return bytes;
    });

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]*$/;
const IMAGE_PATH_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
// Docker's grammar: an optional registry (a host name, or an IPv6 address in brackets, with
// an optional port), path components, an optional tag and an optional digest.
const IMAGE_REFERENCE = new RegExp(
  `^(?:\\[[0-9a-f:.]+\\](?::[0-9]+)?\\/${IMAGE_PATH_COMPONENT}|[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?)` +
    `(?:\\/${IMAGE_PATH_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$`,
);

const containerPath = z
  .string()
  .min(1)
  .max(JOB_LIMITS.pathLength)
  .regex(/^\//, 'must be an absolute path inside the container')
  .refine((path) => !path.split('/').includes('..'), 'must not contain ".."');

export const ResourcesSchema = z.strictObject({
  cpu: z
    .number()
    .positive('must be greater than zero')
    .max(1024, 'is far beyond any machine Ferry runs on')
    .optional()
    .describe('vCPU, e.g. 0.25, 1, 4'),
  memory: size(MiB, 'MiB').optional().describe('MiB as a number, or text with units such as "2GiB"'),
  disk: size(GiB, 'GiB').optional().describe('GiB as a number, or text with units such as "40GiB"'),
  gpu: z.number().int('must be a whole number').min(0, 'must not be negative').max(64).optional(),
});

export const OutputLimitsSchema = z.strictObject({
  stdoutBytes: byteCount(JOB_LIMITS.outputStreamBytesMax)
    .refine((n) => n <= JOB_LIMITS.outputStreamBytesMax, 'must be at most 1 TiB')
    .optional(),
  stderrBytes: byteCount(JOB_LIMITS.outputStreamBytesMax)
    .refine((n) => n <= JOB_LIMITS.outputStreamBytesMax, 'must be at most 1 TiB')
    .optional(),
  inlineBytes: byteCount(JOB_LIMITS.inlineBytesMax)
    .refine((n) => n <= JOB_LIMITS.inlineBytesMax, 'must be at most 1 MiB')
    .optional(),
  keep: z.enum(['head', 'tail', 'head+tail']).optional(),
  outputBytes: byteCount(JOB_LIMITS.outputStreamBytesMax)
    .refine((n) => n <= JOB_LIMITS.outputStreamBytesMax, 'must be at most 1 TiB')
    .optional()
    .describe('the most stored of one output (a file, or a directory with everything in it); default 1 GiB'),
  outputsBytes: byteCount(JOB_LIMITS.outputStreamBytesMax)
    .refine((n) => n <= JOB_LIMITS.outputStreamBytesMax, 'must be at most 1 TiB')
    .optional()
    .describe('the most stored of all outputs together; default 4 GiB'),
  outputFiles: z
    .number()
    .int('must be a whole number')
    .min(0)
    .max(1_000_000)
    .optional()
    .describe('the most files stored over all outputs; default 10,000'),
});

const dataType = z.enum(['FILE', 'DIRECTORY']);

/** A path inside the container; the bid says whether it can be served (absolute, apart from others). */
const dataPath = z.string().min(1, 'must not be empty').max(JOB_LIMITS.pathLength);

export const InputSchema = z
  .strictObject({
    url: z
      .string()
      .max(JOB_LIMITS.urlLength)
      .refine((url) => URL.canParse(url), 'is not a URL (s3://bucket/key or https://host/path)')
      .optional()
      .describe('s3://bucket/key (a prefix ending in / for a DIRECTORY) or https://…'),
    content: z
      .string()
      .refine((text) => byteLength(text) <= JOB_LIMITS.inputContentBytes, 'must be at most 64 KiB')
      .optional()
      .describe('the file itself, as text, instead of a url'),
    path: dataPath.describe('where the input is found in the container: an absolute path'),
    type: dataType.optional().describe('FILE (the default) or DIRECTORY'),
  })
  .refine((input) => (input.url === undefined) !== (input.content === undefined), {
    message: 'give either url or content',
  })
  .refine((input) => input.content === undefined || input.type !== 'DIRECTORY', {
    message: 'content makes a FILE, not a DIRECTORY',
  });

export const OutputSchema = z.strictObject({
  path: dataPath.describe('what to collect after the command exits: an absolute path in the container'),
  name: z
    .string()
    .min(1)
    .max(255)
    .regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, ".", "_" and "-" only')
    .refine((name) => name !== '.' && name !== '..', 'must not be "." or ".."')
    .optional()
    .describe('its name among the results (outputs/NAME); the last part of the path when not given'),
  type: dataType.optional().describe('FILE (the default) or DIRECTORY'),
  url: z
    .string()
    .max(JOB_LIMITS.urlLength)
    .refine((url) => URL.canParse(url), 'is not a URL (file:///dir/name)')
    .optional()
    .describe('where to deliver it once stored: file:///path on the local server, inside FERRY_OUTPUT_ALLOW'),
});

const imageField = z
  .string()
  .min(1, 'must not be empty')
  .max(JOB_LIMITS.imageLength)
  .regex(IMAGE_REFERENCE, 'is not a valid image reference (e.g. "alpine:3.20" or "registry/name@sha256:…")');

const commandField = z
  .array(z.string().refine((arg) => byteLength(arg) <= JOB_LIMITS.commandArgBytes, 'argument is too long'))
  .min(1, 'must have at least one element (the program to run)')
  .max(JOB_LIMITS.commandArgs, `must have at most ${JOB_LIMITS.commandArgs} arguments`)
  .refine((argv) => argv[0] !== '', 'program name (first element) must not be empty')
  .meta({ prefixItems: [{ type: 'string', minLength: 1, description: 'the program to run' }] })
  .refine(
    (argv) => argv.reduce((total, arg) => total + byteLength(arg), 0) <= JOB_LIMITS.commandTotalBytes,
    'arguments together must be at most 256 KiB',
  );

const envField = z
  .record(
    z
      .string()
      .regex(ENV_NAME, 'environment variable names are letters, digits and "_", not starting with a digit'),
    z
      .string()
      .refine((value) => byteLength(value) <= JOB_LIMITS.envValueBytes, 'value is longer than 32 KiB'),
  )
  .refine(
    (env) => Object.keys(env).length <= JOB_LIMITS.envEntries,
    `at most ${JOB_LIMITS.envEntries} variables`,
  );

/** One step of a job with several: its own container, run after the step before it. */
export const StepSchema = z.strictObject({
  image: imageField,
  command: commandField,
  env: envField.optional(),
  workdir: containerPath.optional(),
  ignoreError: z
    .boolean()
    .optional()
    .describe('the steps after it run even when it fails, and its failure is not the job’s'),
});

export const JobSpecSchema = z
  .strictObject({
    name: z
      .string()
      .min(1, 'must not be empty')
      .max(JOB_LIMITS.nameLength)
      .refine((name) => !/\p{Cc}/u.test(name), 'must not hold control characters')
      .optional()
      .describe('a name for people to know the job by; need not be unique'),
    description: z
      .string()
      .max(JOB_LIMITS.descriptionLength)
      .optional()
      .describe('what the job is for, in a few words'),
    image: imageField.optional().describe('the image to run; required unless steps are given'),
    command: commandField
      .optional()
      .describe('the program and its arguments; required unless steps are given'),
    env: envField.optional(),
    workdir: containerPath.optional(),
    resources: ResourcesSchema.optional(),
    timeoutSeconds: z
      .number()
      .int('must be a whole number of seconds')
      .positive('must be greater than zero')
      .max(14 * 24 * 3600, 'must be at most 14 days')
      .optional(),
    network: z.enum(['none', 'egress']).optional(),
    outputLimits: OutputLimitsSchema.optional(),
    inputs: z
      .array(InputSchema)
      .max(JOB_LIMITS.inputs)
      .refine(
        (inputs) =>
          inputs.reduce((total, input) => total + byteLength(input.content ?? ''), 0) <=
          JOB_LIMITS.inputsContentBytes,
        'inline content of all inputs together must be at most 128 KiB',
      )
      .optional()
      .describe('fetched before the command runs, read-only at their paths'),
    outputs: z
      .array(OutputSchema)
      .max(JOB_LIMITS.outputs)
      .optional()
      .describe('collected after the command exits, whatever its exit code'),
    publish: z
      .strictObject({
        destination: z
          .string()
          .regex(/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/, 'must be an s3:// prefix'),
      })
      .optional(),
    labels: z
      .record(
        z
          .string()
          .max(JOB_LIMITS.labelKeyLength)
          .regex(LABEL_KEY, 'label keys are letters, digits, ".", "_", "/", "-"'),
        z.string().max(JOB_LIMITS.labelValueLength),
      )
      .refine(
        (labels) => Object.keys(labels).length <= JOB_LIMITS.labels,
        `at most ${JOB_LIMITS.labels} labels`,
      )
      .optional(),
    priority: z.number().int().min(-100).max(100).optional(),
    volumes: z
      .array(dataPath)
      .max(JOB_LIMITS.volumes)
      .optional()
      .describe('empty writable directories at these paths, shared by the steps and not kept'),
    steps: z
      .array(StepSchema)
      .min(1, 'must have at least one step')
      .max(JOB_LIMITS.steps, `must have at most ${JOB_LIMITS.steps} steps`)
      .optional()
      .describe(
        'instead of image and command: steps run one after another, each in its own container, sharing the inputs and outputs; the first failure ends the job unless that step has ignoreError',
      ),
  })
  // The document says what the check below does: image and command, or steps.
  .meta({ oneOf: [{ required: ['image', 'command'] }, { required: ['steps'] }] })
  .superRefine((spec, ctx) => {
    if (spec.steps !== undefined) {
      for (const field of ['image', 'command', 'env', 'workdir'] as const) {
        if (spec[field] !== undefined)
          ctx.addIssue({
            code: 'custom',
            path: [field],
            message: 'give it in each step when the job has steps',
          });
      }
      return;
    }
    if (spec.image === undefined)
      ctx.addIssue({ code: 'custom', path: ['image'], message: 'required (or give steps)' });
    if (spec.command === undefined)
      ctx.addIssue({ code: 'custom', path: ['command'], message: 'required (or give steps)' });
  });

export type JobSpecInput = z.input<typeof JobSpecSchema>;
type ParsedSpec = z.output<typeof JobSpecSchema>;

export type Keep = 'head' | 'tail' | 'head+tail';

export interface OutputLimits {
  readonly stdoutBytes: number;
  readonly stderrBytes: number;
  readonly inlineBytes: number;
  readonly keep: Keep;
  /** The most stored of one output (a file, or a directory with everything in it). */
  readonly outputBytes: number;
  /** The most stored of all outputs together. */
  readonly outputsBytes: number;
  /** The most files stored over all outputs. */
  readonly outputFiles: number;
}

export type DataType = 'FILE' | 'DIRECTORY';

/** An input: fetched from `url`, or written from `content`, to `path` before the command runs. */
export interface JobInput {
  readonly url?: string;
  readonly content?: string;
  readonly path: string;
  readonly type: DataType;
}

/** An output: collected from `path` after the command exits, stored as outputs/NAME. */
export interface JobOutput {
  readonly path: string;
  readonly name: string;
  readonly type: DataType;
  /** Where it is delivered once stored (a FILE to that file, a DIRECTORY's files below it). */
  readonly url?: string;
}

/** One step of a job: a container run after the step before it ended (successfully, or ignored). */
export interface JobStep {
  readonly image: string;
  readonly command: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly workdir?: string;
  /** The steps after it run even when it fails, and its exit code is not the job's. */
  readonly ignoreError: boolean;
}

/** The request for resources as the caller wrote it, in Ferry's units; absent means "no preference". */
export interface RequestedResources {
  readonly cpu?: number;
  readonly memoryMiB?: number;
  readonly diskGiB?: number;
  readonly gpu: number;
}

/** A validated job with defaults applied: what the rest of Ferry works with. */
export interface JobSpec {
  readonly name?: string;
  readonly description?: string;
  readonly image: string;
  readonly command: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly workdir?: string;
  readonly resources: RequestedResources;
  readonly timeoutSeconds: number;
  readonly network: 'none' | 'egress';
  readonly outputLimits: OutputLimits;
  readonly inputs: readonly JobInput[];
  readonly outputs: readonly JobOutput[];
  /** Empty writable directories the steps share; nothing in them is kept. */
  readonly volumes?: readonly string[];
  readonly publish?: { destination: string };
  readonly labels: Readonly<Record<string, string>>;
  readonly priority: number;
  /**
   * The job's steps, when it has more than its image and command (which are then its first
   * step's): see `stepsOf`.
   */
  readonly steps?: readonly JobStep[];
}

/** The steps a job runs: its own list, or one step of its image and command. */
export function stepsOf(
  spec: Pick<JobSpec, 'image' | 'command' | 'env' | 'workdir'> & Partial<Pick<JobSpec, 'steps'>>,
): readonly JobStep[] {
  return (
    spec.steps ?? [
      {
        image: spec.image,
        command: spec.command,
        env: spec.env,
        ...(spec.workdir === undefined ? {} : { workdir: spec.workdir }),
        ignoreError: false,
      },
    ]
  );
}

/** Every image a job runs, each once, in the order its steps use them. */
export function imagesOf(spec: JobSpec): string[] {
  return [...new Set(stepsOf(spec).map((step) => step.image))];
}

function normalise(spec: ParsedSpec, maxOutputBytes: number): JobSpec {
  const limits = spec.outputLimits ?? {};
  // A default never exceeds what the executor stores; only an explicit ask can be declined.
  const stdoutBytes = limits.stdoutBytes ?? Math.min(DEFAULT_OUTPUT_LIMITS.stdoutBytes, maxOutputBytes);
  const stderrBytes = limits.stderrBytes ?? Math.min(DEFAULT_OUTPUT_LIMITS.stderrBytes, maxOutputBytes);
  const steps = (spec.steps ?? []).map((step) => ({
    image: step.image,
    command: step.command,
    env: step.env ?? {},
    ...(step.workdir === undefined ? {} : { workdir: step.workdir }),
    ignoreError: step.ignoreError ?? false,
  }));
  // The first step (or the only one) is also the job's image and command, as lists show them;
  // a single step that fails the job when it fails is just a job.
  const [first] = steps;
  const main = first ?? {
    image: spec.image ?? '',
    command: spec.command ?? [],
    env: spec.env ?? {},
    ...(spec.workdir === undefined ? {} : { workdir: spec.workdir }),
  };
  const multiStep = steps.length > 1 || first?.ignoreError === true;
  return {
    ...(spec.name === undefined ? {} : { name: spec.name }),
    ...(spec.description === undefined ? {} : { description: spec.description }),
    image: main.image,
    command: main.command,
    env: main.env,
    ...(main.workdir === undefined ? {} : { workdir: main.workdir }),
    resources: {
      ...(spec.resources?.cpu === undefined ? {} : { cpu: spec.resources.cpu }),
      ...(spec.resources?.memory === undefined ? {} : { memoryMiB: spec.resources.memory }),
      ...(spec.resources?.disk === undefined ? {} : { diskGiB: spec.resources.disk }),
      gpu: spec.resources?.gpu ?? 0,
    },
    timeoutSeconds: spec.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS,
    network: spec.network ?? 'none',
    outputLimits: {
      stdoutBytes,
      stderrBytes,
      // Inline text is a view of what is stored, so it can never exceed it.
      inlineBytes: Math.min(
        limits.inlineBytes ?? DEFAULT_OUTPUT_LIMITS.inlineBytes,
        Math.max(stdoutBytes, stderrBytes),
      ),
      keep: limits.keep ?? DEFAULT_OUTPUT_LIMITS.keep,
      outputBytes: limits.outputBytes ?? DEFAULT_OUTPUT_LIMITS.outputBytes,
      outputsBytes: limits.outputsBytes ?? DEFAULT_OUTPUT_LIMITS.outputsBytes,
      outputFiles: limits.outputFiles ?? DEFAULT_OUTPUT_LIMITS.outputFiles,
    },
    inputs: (spec.inputs ?? []).map((input) => ({
      ...(input.url === undefined ? {} : { url: input.url }),
      ...(input.content === undefined ? {} : { content: input.content }),
      path: input.path,
      type: input.type ?? 'FILE',
    })),
    outputs: outputNames(spec.outputs ?? []),
    ...(spec.volumes === undefined || spec.volumes.length === 0 ? {} : { volumes: spec.volumes }),
    ...(spec.publish === undefined ? {} : { publish: spec.publish }),
    labels: spec.labels ?? {},
    priority: spec.priority ?? 0,
    ...(multiStep ? { steps } : {}),
  };
}

/**
 * Each output with its name: the one given, else the last part of its path, else (when that
 * is taken by another output) the whole path with its slashes as "_".
 */
function outputNames(outputs: NonNullable<ParsedSpec['outputs']>): JobOutput[] {
  const base = (path: string) =>
    path
      .split('/')
      .filter((part) => part !== '')
      .at(-1) ?? 'root';
  const given = new Set(outputs.flatMap((output) => (output.name === undefined ? [] : [output.name])));
  const counts = new Map<string, number>();
  for (const output of outputs) {
    if (output.name === undefined) counts.set(base(output.path), (counts.get(base(output.path)) ?? 0) + 1);
  }
  return outputs.map((output) => {
    const short = base(output.path);
    const name =
      output.name ??
      (counts.get(short) === 1 && !given.has(short)
        ? short
        : output.path
            .split('/')
            .filter((part) => part !== '')
            .join('_')
            .replace(/[^A-Za-z0-9._-]/g, '_') || 'root');
    return {
      path: output.path,
      name,
      type: output.type ?? 'FILE',
      ...(output.url === undefined ? {} : { url: output.url }),
    };
  });
}

/** Turns zod issues into field-level problems a person can act on. */
export function toFieldProblems(error: z.ZodError): { field: string; message: string }[] {
  return error.issues.flatMap((issue) => {
    const field = issue.path.length === 0 ? '(body)' : issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      const prefix = issue.path.length === 0 ? '' : `${field}.`;
      return issue.keys.map((key) => ({ field: `${prefix}${key}`, message: 'unknown field' }));
    }
    return [{ field, message: issue.message }];
  });
}

/** Validates a request body against its schema; a mistake is a ValidationError naming each field. */
export function parseBody<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const result = schema.safeParse(input);
  if (!result.success) {
    const problems = toFieldProblems(result.error);
    throw new ValidationError(
      `invalid body: ${problems.map((p) => `${p.field}: ${p.message}`).join('; ')}`,
      problems,
    );
  }
  return result.data;
}

/** Validates a job spec and applies defaults; output limit defaults are capped at `maxOutputBytes`. */
export function parseJobSpec(input: unknown, maxOutputBytes = Number.POSITIVE_INFINITY): JobSpec {
  const result = JobSpecSchema.safeParse(input);
  if (!result.success) {
    const problems = toFieldProblems(result.error);
    const summary = problems
      .slice(0, 3)
      .map((p) => `${p.field}: ${p.message}`)
      .join('; ');
    throw new ValidationError(`invalid job spec: ${summary}${problems.length > 3 ? '; …' : ''}`, problems);
  }
  return normalise(result.data, maxOutputBytes);
}
