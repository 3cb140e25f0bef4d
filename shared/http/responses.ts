// What the API answers, as zod schemas: the OpenAPI document is generated from them, and the
// domain types are checked against them at compile time, so neither can drift from the other.
import { z } from 'zod';
import type { Bid, Execution, ResultManifest } from '../domain/execution.ts';
import type { JobSpec } from '../domain/job-spec.ts';
import { EXECUTION_STATES, type ExecutionState } from '../domain/states.ts';
import type { UploadLinks } from '../domain/upload-links.ts';
import type { StateCounts } from '../ports.ts';
import type { describeNode } from '../use-cases/node.ts';
import type { QueuePlace } from '../use-cases/queue-place.ts';
import type { ResultView } from '../use-cases/results.ts';

const timestamp = z.string().describe('RFC 3339 date-time');
const count = z.number().int().min(0);
const state = z.enum(EXECUTION_STATES);
const platform = z.enum(['fargate', 'docker', 'process']);
const keep = z.enum(['head', 'tail', 'head+tail']);
const review = z.enum(['PENDING', 'ACCEPTED', 'REJECTED']);
const dataType = z.enum(['FILE', 'DIRECTORY']);

export const ResolvedConstraintsSchema = z
  .object({
    platform,
    cpu: z.number(),
    memoryMiB: z.number(),
    diskGiB: z.number(),
    fargate: z
      .object({ cpu: z.string(), memory: z.string(), ephemeralStorageGiB: z.number() })
      .optional()
      .describe('the Fargate task size strings for RunTask'),
    notes: z.array(z.string()).describe('limits the platform does not enforce, said plainly'),
  })
  .describe('what the job will get: the request rounded to what the platform offers');

export const BidSchema = z.object({
  accepted: z.boolean(),
  reason: z.string().describe('why Ferry bid as it did; a decline names what was asked and what is possible'),
  constraints: ResolvedConstraintsSchema.optional(),
  estimate: z
    .object({
      costPerHourUsd: z.number(),
      maxCostUsd: z.number(),
      queueWaitSeconds: z.number(),
      queueWaitAtMostSeconds: z.number().optional(),
      queue: z.object({ runningJobs: count, queuedJobs: count }),
    })
    .optional(),
  expiresAt: timestamp.optional(),
});

/** The job spec as Ferry keeps it: validated, defaults applied, sizes in Ferry's units. */
export const StoredJobSpecSchema = z.object({
  name: z.string().optional(),
  description: z.string().optional(),
  image: z.string(),
  command: z.array(z.string()),
  env: z.record(z.string(), z.string()),
  workdir: z.string().optional(),
  resources: z.object({
    cpu: z.number().optional(),
    memoryMiB: z.number().optional(),
    diskGiB: z.number().optional(),
    gpu: count,
  }),
  timeoutSeconds: z.number().int(),
  network: z.enum(['none', 'egress']),
  outputLimits: z.object({
    stdoutBytes: count,
    stderrBytes: count,
    inlineBytes: count,
    keep,
    outputBytes: count,
    outputsBytes: count,
    outputFiles: count,
  }),
  inputs: z.array(
    z.object({
      url: z.string().optional(),
      content: z.string().optional(),
      path: z.string(),
      type: dataType,
    }),
  ),
  outputs: z.array(
    z.object({ path: z.string(), name: z.string(), type: dataType, url: z.string().optional() }),
  ),
  volumes: z.array(z.string()).optional(),
  publish: z.object({ destination: z.string() }).optional(),
  labels: z.record(z.string(), z.string()),
  priority: z.number().int(),
  steps: z
    .array(
      z.object({
        image: z.string(),
        command: z.array(z.string()),
        env: z.record(z.string(), z.string()),
        workdir: z.string().optional(),
        ignoreError: z.boolean(),
      }),
    )
    .optional()
    .describe('present when the job has several steps; image and command are then its first'),
});

const streamTotals = z.object({ totalBytes: count, storedBytes: count, truncated: z.boolean() });

export const HistoryEntrySchema = z.object({
  state,
  at: timestamp,
  reason: z.string().optional(),
  review: z.enum(['ACCEPTED', 'REJECTED']).optional().describe('set on the entry of a result review'),
  justification: z.string().optional().describe("the caller's words for a decision"),
});

export const ExecutionSchema = z.object({
  id: z.string(),
  owner: z.string(),
  state,
  version: z.number().int(),
  spec: StoredJobSpecSchema,
  bid: BidSchema,
  createdAt: timestamp,
  updatedAt: timestamp,
  queuedAt: timestamp.optional(),
  launchedAt: timestamp.optional(),
  startedAt: timestamp.optional(),
  endedAt: timestamp.optional(),
  deadlineAt: timestamp.optional(),
  task: z
    .object({
      id: z.string(),
      lastEventVersion: z.number(),
      stopSeenAt: timestamp.optional().describe('when the sweeper found the task stopped with no stop event'),
    })
    .optional(),
  stopRequested: z.object({ intent: z.enum(['cancel', 'timeout']), at: timestamp }).optional(),
  dispatchToken: z.string().optional(),
  requestFingerprint: z
    .string()
    .optional()
    .describe('digest of the request that created the execution with an Idempotency-Key'),
  deferrals: count,
  launches: z
    .array(
      z.object({
        at: timestamp,
        uploadSecretDigest: z
          .string()
          .describe(
            "SHA-256 of the secret this attempt's task stores its result with; the secret is never kept",
          ),
      }),
    )
    .optional()
    .describe('each launch attempt, oldest first'),
  exitCode: z.number().int().nullable().optional(),
  reason: z.string().optional(),
  result: z
    .object({
      review,
      exitCode: z.number().int().nullable(),
      manifestKey: z.string(),
      stdout: streamTotals,
      stderr: streamTotals,
      reviewedAt: timestamp.optional(),
      justification: z.string().optional(),
      publishedTo: z.string().optional(),
    })
    .optional(),
  history: z.array(HistoryEntrySchema),
});

export const BidReplySchema = z.object({
  executionId: z.string(),
  bid: BidSchema,
  execution: ExecutionSchema,
});

export const ExecutionPageSchema = z.object({
  items: z.array(ExecutionSchema),
  nextCursor: z.string().optional().describe('absent on the last page'),
});

const StreamResultSchema = z.object({
  totalBytes: count,
  storedBytes: count,
  truncated: z.boolean(),
  headBytes: count,
  tailBytes: count,
  omittedBytes: count,
  inline: z.string(),
  inlineEncoding: z.enum(['utf8', 'base64']),
  inlineTruncated: z.boolean(),
  sha256: z.string().optional().describe('SHA-256 (hex) of the stored bytes'),
});

const OutputResultSchema = z.object({
  name: z.string(),
  path: z.string().describe('its path in the container'),
  type: dataType,
  key: z.string().describe('the object (FILE), or the prefix its files are under (DIRECTORY)'),
  bytes: count.describe('bytes stored'),
  totalBytes: count.describe('bytes the job left there, in plain files'),
  files: count.describe('files stored'),
  truncated: z.boolean().describe('something was cut or skipped'),
  missing: z.boolean().optional().describe('nothing was at the path after the command exited'),
  sha256: z.string().optional().describe('SHA-256 (hex) of the stored bytes of a FILE output'),
  entries: z
    .array(z.object({ path: z.string(), bytes: count, sha256: z.string() }))
    .optional()
    .describe('each file stored of a DIRECTORY output'),
  skipped: z
    .array(z.object({ path: z.string(), bytes: count.optional(), reason: z.string() }))
    .optional()
    .describe('what was left out and why (the first 100)'),
  skippedCount: count.optional(),
  deliveredTo: z.string().optional().describe('the url it was delivered to'),
  deliveryError: z.string().optional().describe('why it could not be delivered to its url'),
});

export const ResultManifestSchema = z.object({
  executionId: z.string(),
  exitCode: z.number().int().nullable(),
  signal: z.string().nullable(),
  partial: z.boolean(),
  timedOut: z.boolean().optional(),
  startError: z.string().optional().describe('why the command never ran'),
  startedAt: timestamp.nullable(),
  endedAt: timestamp,
  stdout: StreamResultSchema,
  stderr: StreamResultSchema,
  outputs: z.array(OutputResultSchema),
  keep,
  steps: z
    .array(
      z.object({
        exitCode: z.number().int().nullable(),
        signal: z.string().nullable(),
        startedAt: timestamp.nullable(),
        endedAt: timestamp,
        stdoutFrom: count.describe('where its output starts in the job’s stdout'),
        stderrFrom: count.describe('where its output starts in the job’s stderr'),
        startError: z.string().optional().describe('why its command never ran'),
      }),
    )
    .optional()
    .describe('a job with steps: how each step that ran ended, in order'),
});

export const ResultViewSchema = z.object({
  executionId: z.string(),
  state,
  review,
  manifest: ResultManifestSchema,
  links: z.object({
    stdout: z.string(),
    stderr: z.string(),
    outputs: z.record(z.string(), z.string()),
    expiresAt: timestamp,
  }),
});

export const StateCountsSchema = z.object({
  counts: z
    .object(
      Object.fromEntries(EXECUTION_STATES.map((name) => [name, count])) as Record<
        ExecutionState,
        typeof count
      >,
    )
    .describe("how many of the caller's executions are in each state"),
  atLeast: z
    .array(state)
    .describe(
      'states whose count stopped at 10,000: there are at least that many (the AWS store reads to count)',
    ),
});

export const NodeSchema = z.object({
  version: z.string(),
  backend: platform,
  isolated: z.boolean(),
  capacity: z.object({
    maxConcurrency: z.number().int(),
    cpu: z.number(),
    memoryMiB: z.number(),
    starvationSeconds: z.number(),
  }),
  usage: z.object({ runningJobs: count, queuedJobs: count, cpu: z.number(), memoryMiB: z.number() }),
  history: z
    .array(z.object({ at: timestamp, runningJobs: count, queuedJobs: count }))
    .describe('jobs running and queued over the last hour, a sample a minute at most, oldest first'),
  perJobLimits: z.object({
    cpu: z.number(),
    memoryMiB: z.number(),
    gpu: z.boolean(),
    timeoutSeconds: z.object({ min: z.number().int(), max: z.number().int() }),
    outputBytesPerStream: count,
    network: z.array(z.enum(['none', 'egress'])),
    images: z.object({
      allow: z.array(z.string()),
      deny: z.array(z.string()),
      registries: z.array(z.string()).describe('registry hosts images may be pulled from'),
    }),
    commandArgs: z.number().int(),
    envEntries: z.number().int(),
  }),
});

export const QueuePlaceSchema = z.object({
  executionId: z.string(),
  position: z
    .number()
    .int()
    .min(1)
    .describe('1 for the next in the order the dispatcher considers jobs: priority, then age'),
  positionAtLeast: z.boolean().describe('true when more were ahead than counted: the position is a floor'),
  queuedJobs: count,
  waitingFor: z
    .enum(['capacity', 'priority', 'reservation', 'dispatch'])
    .describe(
      'capacity: too little is free; priority: a job of higher priority fits first; reservation: ' +
        'capacity is kept for a job queued past the starvation bound; dispatch: it fits and awaits ' +
        'the next dispatch',
    ),
  reason: z.string(),
  reservedFor: z.string().optional().describe('the execution capacity is reserved for'),
});

export const UploadLinksSchema = z.object({
  executionId: z.string(),
  links: z
    .array(
      z.object({
        action: z.enum([
          'put',
          'createMultipart',
          'uploadPart',
          'completeMultipart',
          'abortMultipart',
          'delete',
        ]),
        key: z.string(),
        contentType: z.string().optional(),
        uploadId: z.string().optional(),
        partNumber: z.number().int().optional(),
        method: z.enum(['PUT', 'POST', 'DELETE']),
        url: z.string().describe('a presigned link: it carries its own authority'),
        headers: z.record(z.string(), z.string()).describe('send these headers with it, unchanged'),
      }),
    )
    .describe('in the order asked for'),
  expiresAt: timestamp.describe('when the links stop working'),
});

export const ProblemSchema = z
  .looseObject({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    errors: z
      .array(z.object({ field: z.string(), message: z.string() }))
      .optional()
      .describe('each field that is wrong'),
    allow: z.array(z.string()).optional().describe('405: the methods the path takes'),
    executionId: z.string().optional().describe('422 for a declined job: the DECLINED execution'),
    bid: BidSchema.optional().describe('422 for a declined job: the bid and its reason'),
  })
  .describe('RFC 9457 problem details');

type DeepMutable<T> = T extends readonly (infer U)[]
  ? DeepMutable<U>[]
  : T extends object
    ? { -readonly [K in keyof T]: DeepMutable<T[K]> }
    : T;
/** `true` when the two types are identical (same fields, optional or not, same types); `never` otherwise. */
type Same<A, B> =
  (<T>() => T extends DeepMutable<A> ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : never;

/** Compile-time proof that each domain type and its response schema agree field for field. */
export const RESPONSE_TYPES_MATCH: readonly [
  Same<Execution, z.output<typeof ExecutionSchema>>,
  Same<Bid, z.output<typeof BidSchema>>,
  Same<JobSpec, z.output<typeof StoredJobSpecSchema>>,
  Same<ResultManifest, z.output<typeof ResultManifestSchema>>,
  Same<ResultView, z.output<typeof ResultViewSchema>>,
  Same<Awaited<ReturnType<typeof describeNode>>, z.output<typeof NodeSchema>>,
  Same<UploadLinks, z.output<typeof UploadLinksSchema>>,
  Same<QueuePlace, z.output<typeof QueuePlaceSchema>>,
  Same<StateCounts, z.output<typeof StateCountsSchema>>,
] = [true, true, true, true, true, true, true, true, true];
