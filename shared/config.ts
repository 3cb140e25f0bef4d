// Configuration, parsed once and strictly. Only this module reads the environment:
// every FERRY_* variable must be one Ferry knows, so a typo fails at start, not silently.
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { DEFAULT_REGISTRIES } from './domain/image-reference.ts';
import { DEFAULT_OUTPUT_LIMITS, toFieldProblems } from './domain/job-spec.ts';
import { MiB, parseSize } from './domain/units.ts';
import { UPLOAD_SECRET_PATTERN } from './domain/upload-links.ts';
import { ValidationError } from './errors.ts';

const integer = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => ['true', '1', 'yes'].includes(v));
const patterns = z.string().transform((text) =>
  text
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== ''),
);
/** Comma-separated input source prefixes: `s3://bucket[/prefix]`, `https://host[:port][/path]`, `file:///dir`, or `*`. */
const sourcePrefixes = z.string().transform((text, ctx) =>
  text
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')
    .map((entry) => {
      const url = URL.canParse(entry) ? new URL(entry) : undefined;
      const plain = url !== undefined && url.username === '' && url.search === '' && url.hash === '';
      const fits =
        entry === '*' ||
        (plain && (url.protocol === 's3:' || url.protocol === 'https:') && url.hostname !== '') ||
        (plain && url.protocol === 'file:' && url.host === '' && url.pathname !== '/');
      if (!fits) {
        ctx.addIssue({
          code: 'custom',
          message: `not a source prefix (s3://bucket/prefix/, https://host/path/, file:///dir/ or *): ${entry}`,
        });
        return z.NEVER;
      }
      // A file prefix is kept as the decoded path, as file sources are compared.
      return url?.protocol === 'file:' ? `file://${decodeURIComponent(url.pathname)}` : entry;
    }),
);

/** Where outputs may be delivered: file:// prefixes only (`*` would allow every file). */
const destinationPrefixes = sourcePrefixes.superRefine((entries, ctx) => {
  for (const entry of entries) {
    if (!entry.startsWith('file://')) {
      ctx.addIssue({
        code: 'custom',
        message: `not a file:// prefix (outputs are delivered to files of this machine only): ${entry}`,
      });
    }
  }
});

/** Comma-separated web origins (`scheme://host[:port]`), each normalised as a browser sends it. */
const origins = z.string().transform((text, ctx) =>
  text
    .split(',')
    .map((o) => o.trim())
    .filter((o) => o !== '')
    .map((entry) => {
      const url = URL.canParse(entry) ? new URL(entry) : undefined;
      const bare = url !== undefined && url.pathname === '/' && url.search === '' && url.hash === '';
      if (url === undefined || !bare || url.username !== '' || url.origin === 'null') {
        ctx.addIssue({ code: 'custom', message: `not an origin (scheme://host[:port]): ${entry}` });
        return z.NEVER;
      }
      return url.origin;
    }),
);
const memory = z.string().transform((text, ctx) => {
  const bytes = parseSize(text, MiB);
  if (bytes === undefined || bytes <= 0) {
    ctx.addIssue({ code: 'custom', message: `not a size: ${text}` });
    return z.NEVER;
  }
  return Math.floor(bytes / MiB);
});
const bytes = z.string().transform((text, ctx) => {
  const value = parseSize(text, 1);
  if (value === undefined || value <= 0) {
    ctx.addIssue({ code: 'custom', message: `not a size: ${text}` });
    return z.NEVER;
  }
  return Math.floor(value);
});

export const EnvSchema = z.strictObject({
  FERRY_BACKEND: z.enum(['auto', 'docker', 'process']).default('auto'),
  FERRY_DATA_DIR: z.string().min(1).optional(),
  FERRY_HOST: z.string().min(1).default('127.0.0.1'),
  FERRY_PORT: integer(0, 65535).default(8080),
  FERRY_TOKEN: z.string().min(8).optional(),
  FERRY_ALLOWED_ORIGINS: origins.default([]),
  FERRY_MAX_CONCURRENCY: integer(1, 10_000).optional(),
  FERRY_MAX_CPU: z.coerce.number().positive().optional(),
  FERRY_MAX_MEMORY: memory.optional(),
  FERRY_STARVATION_SECONDS: integer(0, 7 * 24 * 3600).default(60),
  FERRY_BID_TTL_SECONDS: integer(1, 7 * 24 * 3600).default(300),
  FERRY_IMAGE_ALLOW: patterns.default(['*']),
  FERRY_IMAGE_DENY: patterns.default([]),
  FERRY_REGISTRY_ALLOW: patterns.optional(),
  FERRY_PUBLISH_ALLOW: patterns.optional(),
  FERRY_INPUT_ALLOW: sourcePrefixes.optional(),
  FERRY_OUTPUT_ALLOW: destinationPrefixes.optional(),
  FERRY_S3_FORCE_PATH_STYLE: bool.default(false),
  FERRY_MIN_TIMEOUT_SECONDS: integer(1, 14 * 24 * 3600).default(1),
  FERRY_MAX_TIMEOUT_SECONDS: integer(1, 14 * 24 * 3600).default(24 * 3600),
  FERRY_ALLOW_EGRESS: bool.default(true),
  FERRY_MAX_OUTPUT_BYTES: bytes.default(256 * MiB),
  FERRY_QUEUE_MAX_RECEIVES: integer(1, 1000).default(5),
  FERRY_QUEUE_VISIBILITY_SECONDS: integer(1, 12 * 3600).default(30),
  FERRY_SWEEP_INTERVAL_SECONDS: z.coerce.number().positive().max(3600).default(1),
  FERRY_DOCKER_SOCKET: z.string().min(1).optional(),
  FERRY_DOCKER_CAPTURE: z.enum(['wrapper', 'journal', 'attach']).optional(),
  FERRY_RESULT_LINK_SECONDS: integer(1, 7 * 24 * 3600).default(3600),
  FERRY_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
  FERRY_URL: z.url().optional(),
  // AWS deployment (set by the CDK construct on each function).
  FERRY_TABLE_NAME: z.string().min(1).optional(),
  FERRY_QUEUE_URL: z.url().optional(),
  FERRY_BUCKET: z.string().min(3).optional(),
  FERRY_CLUSTER: z.string().min(1).optional(),
  FERRY_SUBNETS: patterns.optional(),
  FERRY_SECURITY_GROUPS: patterns.optional(),
  FERRY_ASSIGN_PUBLIC_IP: bool.optional(),
  FERRY_TASK_ROLE_ARN: z.string().min(1).optional(),
  FERRY_EXECUTION_ROLE_ARN: z.string().min(1).optional(),
  FERRY_LOG_GROUP: z.string().min(1).optional(),
  FERRY_RUNNER_IMAGE: z.string().min(1).optional(),
  FERRY_API_URL: z.url({ protocol: /^https?$/ }).optional(),
  FERRY_NETWORK_ISOLATION: z.enum(['open', 'isolated']).default('open'),
  FERRY_CAPACITY_PROVIDER: z.enum(['FARGATE', 'FARGATE_SPOT']).default('FARGATE'),
  FERRY_RETENTION_DAYS: integer(1, 3650).default(30),
});

export interface FerryConfig {
  readonly backend: 'auto' | 'docker' | 'process';
  readonly dataDir: string;
  readonly host: string;
  readonly port: number;
  readonly token?: string;
  /** Web origins besides the server's own whose pages may call the API. */
  readonly allowedOrigins: readonly string[];
  readonly capacity: {
    readonly maxConcurrency: number;
    readonly maxCpu: number;
    readonly maxMemoryMiB: number;
    /** After this long in the queue a job reserves capacity so smaller jobs cannot starve it. */
    readonly starvationSeconds: number;
  };
  readonly policy: {
    readonly bidTtlSeconds: number;
    readonly imageAllow: readonly string[];
    readonly imageDeny: readonly string[];
    /** Registry host patterns images may be pulled from; images already on the host always run. */
    readonly registryAllow: readonly string[];
    /** s3:// destinations results may be published to (patterns; `*` matches anything). */
    readonly publishAllow: readonly string[];
    /** Where inputs may be fetched from (prefixes; `*` for anywhere). */
    readonly inputAllow: readonly string[];
    /** Where outputs may be delivered to (file:// prefixes on this machine). */
    readonly outputAllow: readonly string[];
    readonly minTimeoutSeconds: number;
    readonly maxTimeoutSeconds: number;
    readonly allowEgress: boolean;
    readonly maxOutputBytes: number;
  };
  readonly queue: { readonly maxReceives: number; readonly visibilitySeconds: number };
  readonly sweepIntervalSeconds: number;
  /** Ended executions (records and stored output) are kept this many days, then deleted. */
  readonly retentionDays: number;
  readonly dockerSocket?: string;
  /**
   * How the Docker backend captures output (see DockerCapture). Unset: the wrapper where it can
   * be built, else the engine's journal.
   */
  readonly dockerCapture?: 'wrapper' | 'journal' | 'attach';
  readonly resultLinkSeconds: number;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** Where the CLI finds the server. */
  readonly url: string;
  /** PATH given to jobs of the process backend, so their programs are found. */
  readonly processPath: string;
  /** Address S3 inputs by path (bucket in the path, not the host name), as emulators need. */
  readonly s3ForcePathStyle: boolean;
  /** Present when every AWS setting is: the deployment's resources. */
  readonly aws?: AwsSettings;
}

export interface AwsSettings {
  readonly region: string;
  readonly tableName: string;
  readonly queueUrl: string;
  readonly bucket: string;
  readonly cluster: string;
  readonly subnets: readonly string[];
  readonly securityGroups: readonly string[];
  readonly assignPublicIp: boolean;
  readonly taskRoleArn: string;
  readonly executionRoleArn: string;
  readonly logGroup: string;
  readonly runnerImage: string;
  /**
   * Ferry's API, where task publishers ask for upload links (the dispatcher's setting only:
   * the api function cannot be given its own API's address). Without it tasks write results
   * with the task role's own permissions.
   */
  readonly apiUrl?: string;
  /** `isolated`: tasks sit in subnets without a route out, so network "none" holds. */
  readonly networkIsolation: 'open' | 'isolated';
  readonly capacityProvider: 'FARGATE' | 'FARGATE_SPOT';
  readonly retentionDays: number;
}

const AWS_KEYS = [
  'FERRY_TABLE_NAME',
  'FERRY_QUEUE_URL',
  'FERRY_BUCKET',
  'FERRY_CLUSTER',
  'FERRY_SUBNETS',
  'FERRY_SECURITY_GROUPS',
  'FERRY_TASK_ROLE_ARN',
  'FERRY_EXECUTION_ROLE_ARN',
  'FERRY_LOG_GROUP',
  'FERRY_RUNNER_IMAGE',
] as const;

/** Parses FERRY_* variables (and DOCKER_HOST) from `env`; throws ValidationError naming every bad one. */
export function loadConfig(env: Record<string, string | undefined> = {}, cwd = '.'): FerryConfig {
  const ferryVars = Object.fromEntries(
    Object.entries(env).filter(
      ([key, value]) => key.startsWith('FERRY_') && value !== undefined && value !== '',
    ),
  );
  const parsed = EnvSchema.safeParse(ferryVars);
  if (!parsed.success) {
    const problems = toFieldProblems(parsed.error);
    throw new ValidationError(
      `invalid configuration: ${problems.map((p) => `${p.field}: ${p.message}`).join('; ')}`,
      problems,
    );
  }
  const e = parsed.data;
  if (e.FERRY_MIN_TIMEOUT_SECONDS > e.FERRY_MAX_TIMEOUT_SECONDS) {
    throw new ValidationError(
      'invalid configuration: FERRY_MIN_TIMEOUT_SECONDS is above FERRY_MAX_TIMEOUT_SECONDS',
    );
  }
  const onAws = e.FERRY_TABLE_NAME !== undefined;
  const dockerHost = env.DOCKER_HOST?.startsWith('unix://')
    ? env.DOCKER_HOST.slice('unix://'.length)
    : undefined;
  const dockerSocket = e.FERRY_DOCKER_SOCKET ?? dockerHost;
  const config: FerryConfig = {
    backend: e.FERRY_BACKEND,
    dataDir: path.resolve(cwd, e.FERRY_DATA_DIR ?? '.ferry'),
    host: e.FERRY_HOST,
    port: e.FERRY_PORT,
    ...(e.FERRY_TOKEN === undefined ? {} : { token: e.FERRY_TOKEN }),
    allowedOrigins: e.FERRY_ALLOWED_ORIGINS,
    capacity: {
      maxConcurrency: e.FERRY_MAX_CONCURRENCY ?? (onAws ? 50 : 4),
      // On AWS the budget guards the account's Fargate vCPU quota; locally, the host.
      maxCpu: e.FERRY_MAX_CPU ?? (onAws ? 64 : os.cpus().length),
      // Leave a quarter of the host to the server, Docker and the system.
      maxMemoryMiB: e.FERRY_MAX_MEMORY ?? (onAws ? 256 * 1024 : Math.floor((os.totalmem() * 0.75) / MiB)),
      starvationSeconds: e.FERRY_STARVATION_SECONDS,
    },
    policy: {
      bidTtlSeconds: e.FERRY_BID_TTL_SECONDS,
      imageAllow: e.FERRY_IMAGE_ALLOW,
      imageDeny: e.FERRY_IMAGE_DENY,
      registryAllow: e.FERRY_REGISTRY_ALLOW ?? defaultRegistries(e),
      // Locally "publishing" copies into the data directory; on AWS only what the deployment granted.
      publishAllow: e.FERRY_PUBLISH_ALLOW ?? (onAws ? [] : ['*']),
      // On AWS the deployment's own bucket under inputs/ always, and what the deployment adds
      // (its task role may read those); locally nothing but inline content unless allowed.
      inputAllow: [
        ...(onAws && e.FERRY_BUCKET ? [`s3://${e.FERRY_BUCKET}/inputs/`] : []),
        ...(e.FERRY_INPUT_ALLOW ?? []),
      ],
      outputAllow: e.FERRY_OUTPUT_ALLOW ?? [],
      minTimeoutSeconds: e.FERRY_MIN_TIMEOUT_SECONDS,
      maxTimeoutSeconds: e.FERRY_MAX_TIMEOUT_SECONDS,
      allowEgress: e.FERRY_ALLOW_EGRESS,
      maxOutputBytes: e.FERRY_MAX_OUTPUT_BYTES,
    },
    queue: { maxReceives: e.FERRY_QUEUE_MAX_RECEIVES, visibilitySeconds: e.FERRY_QUEUE_VISIBILITY_SECONDS },
    sweepIntervalSeconds: e.FERRY_SWEEP_INTERVAL_SECONDS,
    retentionDays: e.FERRY_RETENTION_DAYS,
    ...(dockerSocket === undefined ? {} : { dockerSocket }),
    ...(e.FERRY_DOCKER_CAPTURE === undefined ? {} : { dockerCapture: e.FERRY_DOCKER_CAPTURE }),
    resultLinkSeconds: e.FERRY_RESULT_LINK_SECONDS,
    logLevel: e.FERRY_LOG_LEVEL,
    url: e.FERRY_URL ?? `http://${e.FERRY_HOST}:${e.FERRY_PORT}`,
    processPath: env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    s3ForcePathStyle: e.FERRY_S3_FORCE_PATH_STYLE,
    ...awsSettings(e, env),
  };
  return deepFreeze(config);
}

/** Docker Hub and public ECR; on AWS also the deployment account's own ECR registries. */
function defaultRegistries(e: z.output<typeof EnvSchema>): string[] {
  const account = /^arn:aws[\w-]*:iam::(\d{12}):/.exec(e.FERRY_TASK_ROLE_ARN ?? '')?.[1];
  return account === undefined
    ? [...DEFAULT_REGISTRIES]
    : [...DEFAULT_REGISTRIES, `${account}.dkr.ecr.*.amazonaws.com`, `${account}.dkr.ecr.*.amazonaws.com.cn`];
}

function awsSettings(
  e: z.output<typeof EnvSchema>,
  env: Record<string, string | undefined>,
): { aws?: AwsSettings } {
  const given = AWS_KEYS.filter((key) => e[key] !== undefined);
  if (given.length === 0) return {};
  const missing = AWS_KEYS.filter((key) => e[key] === undefined);
  if (missing.length > 0) {
    throw new ValidationError(
      `invalid configuration: the AWS settings are incomplete; missing ${missing.join(', ')}`,
    );
  }
  return {
    aws: {
      region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
      tableName: e.FERRY_TABLE_NAME ?? '',
      queueUrl: e.FERRY_QUEUE_URL ?? '',
      bucket: e.FERRY_BUCKET ?? '',
      cluster: e.FERRY_CLUSTER ?? '',
      subnets: e.FERRY_SUBNETS ?? [],
      securityGroups: e.FERRY_SECURITY_GROUPS ?? [],
      assignPublicIp: e.FERRY_ASSIGN_PUBLIC_IP ?? false,
      taskRoleArn: e.FERRY_TASK_ROLE_ARN ?? '',
      executionRoleArn: e.FERRY_EXECUTION_ROLE_ARN ?? '',
      logGroup: e.FERRY_LOG_GROUP ?? '',
      runnerImage: e.FERRY_RUNNER_IMAGE ?? '',
      ...(e.FERRY_API_URL === undefined ? {} : { apiUrl: e.FERRY_API_URL }),
      networkIsolation: e.FERRY_NETWORK_ISOLATION,
      capacityProvider: e.FERRY_CAPACITY_PROVIDER,
      retentionDays: e.FERRY_RETENTION_DAYS,
    },
  };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/** JSON in a variable, then checked against `schema`. */
const jsonOf = <T extends z.ZodType>(schema: T) =>
  z.string().transform((text, ctx): z.output<T> => {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'not JSON' });
      return z.NEVER;
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      for (const problem of toFieldProblems(parsed.error)) {
        ctx.addIssue({ code: 'custom', message: `${problem.field}: ${problem.message}` });
      }
      return z.NEVER;
    }
    return parsed.data;
  });

const dataPlace = { volume: z.number().int().min(0), relative: z.string() };
const dataType = z.enum(['FILE', 'DIRECTORY']);

const StageOrderSchema = z.strictObject({
  diskBytes: z.number().int().min(0),
  volumes: z.array(z.strictObject({ writable: z.boolean(), mountPoints: z.array(z.string()) })),
  inputs: z.array(
    z.strictObject({
      url: z.string().optional(),
      content: z.string().optional(),
      path: z.string(),
      type: dataType,
      ...dataPlace,
    }),
  ),
});

const PublisherOutputsSchema = z.array(
  z.strictObject({ name: z.string().min(1), path: z.string(), type: dataType, ...dataPlace }),
);

/** The job's steps as the publisher needs them: in order, whether each one's failure is ignored. */
const PublisherStepsSchema = z
  .array(z.strictObject({ ignoreError: z.boolean() }))
  .min(1)
  .max(64);

const StageEnvSchema = z.object({
  FERRY_EXECUTION_ID: z.string().regex(/^ex_[0-9a-z]{26}$/),
  FERRY_STAGE: jsonOf(StageOrderSchema),
  FERRY_IO_DIR: z.string().min(1).default('/ferry/io'),
  FERRY_DATA_ROOT: z.string().min(1).default('/ferry-data'),
  FERRY_S3_FORCE_PATH_STYLE: bool.default(false),
  FERRY_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
});

export interface StageConfig {
  readonly executionId: string;
  readonly order: z.output<typeof StageOrderSchema>;
  readonly ioDir: string;
  readonly dataRoot: string;
  readonly s3ForcePathStyle: boolean;
  readonly region: string;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
}

/** A task container's own variables (those of `schema`), checked; a problem names each one. */
function containerSettings<Schema extends z.ZodObject>(
  schema: Schema,
  env: Record<string, string | undefined>,
  container: string,
): z.output<Schema> {
  const known = Object.fromEntries(Object.entries(env).filter(([key]) => key in schema.shape));
  const parsed = schema.safeParse(known);
  if (!parsed.success) {
    const problems = toFieldProblems(parsed.error);
    throw new ValidationError(
      `invalid ${container} configuration: ${problems.map((p) => `${p.field}: ${p.message}`).join('; ')}`,
    );
  }
  return parsed.data;
}

/** The stage container's settings, given by the task definition and RunTask overrides. */
export function loadStageConfig(env: Record<string, string | undefined>): StageConfig {
  const e = containerSettings(StageEnvSchema, env, 'stage');
  return deepFreeze({
    executionId: e.FERRY_EXECUTION_ID,
    order: e.FERRY_STAGE,
    ioDir: e.FERRY_IO_DIR,
    dataRoot: e.FERRY_DATA_ROOT,
    s3ForcePathStyle: e.FERRY_S3_FORCE_PATH_STYLE,
    region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    logLevel: e.FERRY_LOG_LEVEL,
  });
}

const PublisherEnvSchema = z.object({
  FERRY_EXECUTION_ID: z.string().regex(/^ex_[0-9a-z]{26}$/),
  FERRY_API_URL: z.url({ protocol: /^https?$/ }).optional(),
  FERRY_UPLOAD_SECRET: z.string().regex(UPLOAD_SECRET_PATTERN, 'not an upload secret').optional(),
  FERRY_BUCKET: z.string().min(3).optional(),
  FERRY_OUTPUT_LIMITS: z.string().transform((text, ctx) => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      ctx.addIssue({ code: 'custom', message: 'not JSON' });
      return z.NEVER;
    }
  }),
  FERRY_OUTPUTS: jsonOf(PublisherOutputsSchema).optional(),
  FERRY_STEPS: jsonOf(PublisherStepsSchema).optional(),
  FERRY_IO_DIR: z.string().min(1).default('/ferry/io'),
  FERRY_DATA_ROOT: z.string().min(1).default('/ferry-data'),
  FERRY_LIVE_FLUSH_SECONDS: z.coerce.number().positive().max(300).default(5),
  FERRY_STOP_GRACE_SECONDS: z.coerce.number().min(0).max(110).default(20),
  FERRY_S3_FORCE_PATH_STYLE: bool.default(false),
  FERRY_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
});

const OutputLimitsEnvSchema = z.strictObject({
  stdoutBytes: z.number().int().min(0),
  stderrBytes: z.number().int().min(0),
  inlineBytes: z.number().int().min(0),
  keep: z.enum(['head', 'tail', 'head+tail']),
  outputBytes: z.number().int().min(0).default(DEFAULT_OUTPUT_LIMITS.outputBytes),
  outputsBytes: z.number().int().min(0).default(DEFAULT_OUTPUT_LIMITS.outputsBytes),
  outputFiles: z.number().int().min(0).default(DEFAULT_OUTPUT_LIMITS.outputFiles),
});

/** Where the publisher stores the result. */
export type PublisherTarget =
  /** Through upload links Ferry's API signs for this execution (the task role may not write). */
  | { readonly kind: 'links'; readonly apiUrl: string; readonly uploadSecret: string }
  /** Straight into the bucket, with the task role's own permissions. */
  | { readonly kind: 'bucket'; readonly bucket: string; readonly forcePathStyle: boolean };

export interface PublisherConfig {
  readonly executionId: string;
  readonly target: PublisherTarget;
  readonly limits: z.output<typeof OutputLimitsEnvSchema>;
  readonly ioDir: string;
  /** The job's outputs, and where they are: volume K under `dataRoot`. */
  readonly outputs: z.output<typeof PublisherOutputsSchema>;
  /** A job with steps, each in its own container with its own io directory; absent for a plain job. */
  readonly steps?: z.output<typeof PublisherStepsSchema>;
  readonly dataRoot: string;
  readonly flushSeconds: number;
  readonly stopGraceSeconds: number;
  readonly region: string;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
}

/** The publisher container's settings, given by the task definition and RunTask overrides. */
export function loadPublisherConfig(env: Record<string, string | undefined>): PublisherConfig {
  const e = containerSettings(PublisherEnvSchema, env, 'publisher');
  const limits = OutputLimitsEnvSchema.safeParse(e.FERRY_OUTPUT_LIMITS);
  if (!limits.success) {
    throw new ValidationError(
      `invalid publisher configuration: FERRY_OUTPUT_LIMITS: ${toFieldProblems(limits.error)
        .map((p) => `${p.field}: ${p.message}`)
        .join('; ')}`,
    );
  }
  return deepFreeze({
    executionId: e.FERRY_EXECUTION_ID,
    target: publisherTarget(e),
    limits: limits.data,
    ioDir: e.FERRY_IO_DIR,
    outputs: e.FERRY_OUTPUTS ?? [],
    ...(e.FERRY_STEPS === undefined ? {} : { steps: e.FERRY_STEPS }),
    dataRoot: e.FERRY_DATA_ROOT,
    flushSeconds: e.FERRY_LIVE_FLUSH_SECONDS,
    stopGraceSeconds: e.FERRY_STOP_GRACE_SECONDS,
    region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    logLevel: e.FERRY_LOG_LEVEL,
  });
}

/** Links when the API and the secret are given (both, or neither), else the bucket. */
function publisherTarget(e: z.output<typeof PublisherEnvSchema>): PublisherTarget {
  if (e.FERRY_API_URL !== undefined && e.FERRY_UPLOAD_SECRET !== undefined) {
    return { kind: 'links', apiUrl: e.FERRY_API_URL, uploadSecret: e.FERRY_UPLOAD_SECRET };
  }
  if (e.FERRY_API_URL !== undefined) {
    throw new ValidationError(
      'invalid publisher configuration: FERRY_API_URL is set but FERRY_UPLOAD_SECRET is not',
    );
  }
  if (e.FERRY_BUCKET === undefined) {
    throw new ValidationError(
      'invalid publisher configuration: set FERRY_API_URL (with FERRY_UPLOAD_SECRET) or FERRY_BUCKET',
    );
  }
  return { kind: 'bucket', bucket: e.FERRY_BUCKET, forcePathStyle: e.FERRY_S3_FORCE_PATH_STYLE };
}
