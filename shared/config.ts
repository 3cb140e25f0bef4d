// Configuration, parsed once and strictly. Only this module reads the environment:
// every FERRY_* variable must be one Ferry knows, so a typo fails at start, not silently.
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { toFieldProblems } from './domain/job-spec.ts';
import { MiB, parseSize } from './domain/units.ts';
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

const EnvSchema = z.strictObject({
  FERRY_BACKEND: z.enum(['auto', 'docker', 'process']).default('auto'),
  FERRY_DATA_DIR: z.string().min(1).optional(),
  FERRY_HOST: z.string().min(1).default('127.0.0.1'),
  FERRY_PORT: integer(0, 65535).default(8080),
  FERRY_TOKEN: z.string().min(8).optional(),
  FERRY_MAX_CONCURRENCY: integer(1, 10_000).default(4),
  FERRY_MAX_CPU: z.coerce.number().positive().optional(),
  FERRY_MAX_MEMORY: memory.optional(),
  FERRY_STARVATION_SECONDS: integer(0, 7 * 24 * 3600).default(60),
  FERRY_BID_TTL_SECONDS: integer(1, 7 * 24 * 3600).default(300),
  FERRY_IMAGE_ALLOW: patterns.default(['*']),
  FERRY_IMAGE_DENY: patterns.default([]),
  FERRY_MIN_TIMEOUT_SECONDS: integer(1, 14 * 24 * 3600).default(1),
  FERRY_MAX_TIMEOUT_SECONDS: integer(1, 14 * 24 * 3600).default(24 * 3600),
  FERRY_ALLOW_EGRESS: bool.default(true),
  FERRY_MAX_OUTPUT_BYTES: bytes.default(256 * MiB),
  FERRY_QUEUE_MAX_RECEIVES: integer(1, 1000).default(5),
  FERRY_QUEUE_VISIBILITY_SECONDS: integer(1, 12 * 3600).default(30),
  FERRY_SWEEP_INTERVAL_SECONDS: z.coerce.number().positive().max(3600).default(1),
  FERRY_DOCKER_SOCKET: z.string().min(1).optional(),
  FERRY_RESULT_LINK_SECONDS: integer(1, 7 * 24 * 3600).default(3600),
  FERRY_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
  FERRY_URL: z.url().optional(),
});

export interface FerryConfig {
  readonly backend: 'auto' | 'docker' | 'process';
  readonly dataDir: string;
  readonly host: string;
  readonly port: number;
  readonly token?: string;
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
    readonly minTimeoutSeconds: number;
    readonly maxTimeoutSeconds: number;
    readonly allowEgress: boolean;
    readonly maxOutputBytes: number;
  };
  readonly queue: { readonly maxReceives: number; readonly visibilitySeconds: number };
  readonly sweepIntervalSeconds: number;
  readonly dockerSocket?: string;
  readonly resultLinkSeconds: number;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** Where the CLI finds the server. */
  readonly url: string;
  /** PATH given to jobs of the process backend, so their programs are found. */
  readonly processPath: string;
}

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
    capacity: {
      maxConcurrency: e.FERRY_MAX_CONCURRENCY,
      maxCpu: e.FERRY_MAX_CPU ?? os.cpus().length,
      // Leave a quarter of the host to the server, Docker and the system.
      maxMemoryMiB: e.FERRY_MAX_MEMORY ?? Math.floor((os.totalmem() * 0.75) / MiB),
      starvationSeconds: e.FERRY_STARVATION_SECONDS,
    },
    policy: {
      bidTtlSeconds: e.FERRY_BID_TTL_SECONDS,
      imageAllow: e.FERRY_IMAGE_ALLOW,
      imageDeny: e.FERRY_IMAGE_DENY,
      minTimeoutSeconds: e.FERRY_MIN_TIMEOUT_SECONDS,
      maxTimeoutSeconds: e.FERRY_MAX_TIMEOUT_SECONDS,
      allowEgress: e.FERRY_ALLOW_EGRESS,
      maxOutputBytes: e.FERRY_MAX_OUTPUT_BYTES,
    },
    queue: { maxReceives: e.FERRY_QUEUE_MAX_RECEIVES, visibilitySeconds: e.FERRY_QUEUE_VISIBILITY_SECONDS },
    sweepIntervalSeconds: e.FERRY_SWEEP_INTERVAL_SECONDS,
    ...(dockerSocket === undefined ? {} : { dockerSocket }),
    resultLinkSeconds: e.FERRY_RESULT_LINK_SECONDS,
    logLevel: e.FERRY_LOG_LEVEL,
    url: e.FERRY_URL ?? `http://${e.FERRY_HOST}:${e.FERRY_PORT}`,
    processPath: env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
  };
  return deepFreeze(config);
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
