// A queue of jobs drained through the emulated deployment against Fargate's launch rate: the
// stack is synthesized with a capacity budget large enough for every job (so capacity is never
// what holds a launch back), the dispatcher's event source is held while the jobs are
// submitted, then let go; the gateway refuses RunTask past Fargate's quota (100 at once,
// refilled at 20 a second) as Fargate does. Tasks are not realised as containers: what is
// measured is how fast Ferry launches, against the most Fargate allows. DynamoDB is Dynoxide's
// (see bench/dynoxide.ts) and SQS LocalStack's: with 10,000 messages queued, one receive and
// delete takes moto 1.2 s (6 ms on LocalStack), and moto's DynamoDB reads the whole table for
// each index query; ECS and EC2 stay on moto.
//
// Run directly against a running emulator:
//   node --import tsx bench/emulated-drain.ts <endpoint> [jobs]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { synthesize } from '../cli/emulate.ts';
import type { Execution } from '../shared/domain/execution.ts';
import { silentLogger } from '../shared/logger.ts';
import { EmulatedAwsDeployment } from '../shared/runtime/emulated-aws.ts';
import { startLocalStack } from '../test/support/localstack.ts';
import { startMoto } from '../test/support/moto.ts';
import { startDynoxide } from './dynoxide.ts';
import { benchCaller } from './emulated-dispatch.ts';

/** moto, Dynoxide and LocalStack started for the drain, and stopped after it. */
export async function withDrainEmulators<T>(
  progress: (line: string) => void,
  run: (endpoints: Parameters<typeof benchEmulatedDrain>[0]) => Promise<T>,
): Promise<T> {
  const started: { stop: () => Promise<void> }[] = [];
  try {
    const moto = await startMoto();
    started.push(moto);
    const dynoxide = await startDynoxide(progress);
    started.push(dynoxide);
    const localstack = await startLocalStack();
    started.push(localstack);
    const elsewhere = localstack.endpoint;
    return await run({
      default: moto.endpoint,
      dynamodb: dynoxide.endpoint,
      sqs: elsewhere,
      s3: elsewhere,
      events: elsewhere,
    });
  } finally {
    await Promise.all(started.map((emulator) => emulator.stop().catch(() => undefined)));
  }
}

/** Fargate's sustained launch rate, tasks a second. */
export const FARGATE_LAUNCHES_PER_SECOND = 20;

export interface DrainBench {
  readonly jobs: number;
  readonly submitSeconds: number;
  /** From letting the event source go to the last launch. */
  readonly drainSeconds: number;
  readonly launched: number;
  /** Launches a second over the whole drain, and over its middle (10th to 90th percent). */
  readonly launchesPerSecond: number;
  readonly steadyLaunchesPerSecond: number;
  /** RunTask calls Fargate's rate refused (each one retried by Ferry). */
  readonly throttled: number;
  /** Executions that did not launch: still QUEUED, or FAILED. */
  readonly queued: number;
  readonly failed: number;
  readonly failureReasons: readonly string[];
  /** Where the drain's AWS time went: the costliest operations, with calls and mean time. */
  readonly slowest: readonly {
    readonly operation: string;
    readonly calls: number;
    readonly meanMs: number;
  }[];
}

const SUBMIT_PARALLELISM = 16;
/** A drain that launches nothing for this long is stuck, and reported as it is. */
const STALL_MS = 120_000;

export async function benchEmulatedDrain(
  /**
   * Where each service answers: emulators that do not slow as the queue grows. DynamoDB on
   * Dynoxide, SQS (S3, EventBridge) on LocalStack, ECS on moto (the default).
   */
  endpoints: { readonly default: string } & Readonly<Record<'dynamodb' | 'sqs' | 's3' | 'events', string>>,
  jobs = 10_000,
  progress: (line: string) => void = () => undefined,
): Promise<DrainBench> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-drain-'));
  // Room for every job at once (0.25 vCPU and 512 MiB each): the launch rate is the only limit.
  synthesize(dir, process.env, {
    'ferry:maxConcurrentJobs': String(jobs),
    'ferry:maxVcpus': String(Math.ceil(jobs / 4)),
    'ferry:maxMemoryMiB': String(jobs * 512),
  });
  const deployment = await EmulatedAwsDeployment.start({
    assemblyDir: dir,
    endpoints,
    sweepOnSchedule: false,
    log: silentLogger,
  });
  try {
    await Promise.all(deployment.pollers.map((poller) => poller.stop()));
    const client = benchCaller(deployment);

    const submitStarted = performance.now();
    let submitted = 0;
    await Promise.all(
      Array.from({ length: SUBMIT_PARALLELISM }, async () => {
        while (submitted < jobs) {
          submitted += 1;
          const reply = await client.json<Execution>('POST', '/v1/jobs', {
            image: 'busybox:latest',
            command: ['true'],
          });
          if (reply.body.state !== 'QUEUED') throw new Error(`a submitted job is ${reply.body.state}`);
          if (submitted % 1000 === 0) progress(`${submitted} of ${jobs} jobs queued`);
        }
      }),
    );
    const submitSeconds = (performance.now() - submitStarted) / 1000;

    const launchedAt: number[] = [];
    const drainFrom = deployment.calls.length;
    let scanned = drainFrom;
    const drainStarted = Date.now();
    for (const poller of deployment.pollers) poller.start();
    let lastReport = drainStarted;
    while (launchedAt.length < jobs) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      const calls = deployment.calls;
      for (; scanned < calls.length; scanned += 1) {
        const call = calls[scanned];
        if (call?.service === 'ecs' && call.operation === 'RunTask' && call.status === 200) {
          launchedAt.push(Date.parse(call.at));
        }
      }
      const last = launchedAt.at(-1) ?? drainStarted;
      if (Date.now() - last > STALL_MS) break;
      if (Date.now() - lastReport >= 10_000) {
        lastReport = Date.now();
        progress(
          `${launchedAt.length} of ${jobs} launched in ${((Date.now() - drainStarted) / 1000).toFixed(0)} s, ${deployment.throttledLaunches} RunTask calls throttled`,
        );
      }
    }
    await Promise.all(deployment.pollers.map((poller) => poller.stop()));
    const spent = new Map<string, { calls: number; ms: number }>();
    for (const call of deployment.calls.slice(drainFrom)) {
      if (call.operation === 'ReceiveMessage') continue; // long polls: waiting, not work
      const key = `${call.service}:${call.operation}`;
      const entry = spent.get(key) ?? { calls: 0, ms: 0 };
      entry.calls += 1;
      entry.ms += call.durationMs;
      spent.set(key, entry);
    }
    const slowest = [...spent]
      .sort((a, b) => b[1].ms - a[1].ms)
      .slice(0, 5)
      .map(([operation, e]) => ({
        operation,
        calls: e.calls,
        meanMs: Math.round((e.ms / e.calls) * 10) / 10,
      }));
    launchedAt.sort((a, b) => a - b);
    const end = launchedAt.at(-1) ?? drainStarted;
    const drainSeconds = (end - drainStarted) / 1000;
    const at = (q: number) =>
      launchedAt[Math.min(launchedAt.length - 1, Math.floor(q * launchedAt.length))] ?? 0;
    const middle = (at(0.9) - at(0.1)) / 1000;

    const count = async (state: string) => {
      const reasons: string[] = [];
      let total = 0;
      let cursor: string | undefined;
      do {
        const page = (
          await client.json<{ items: Execution[]; nextCursor?: string }>(
            'GET',
            `/v1/executions?state=${state}&limit=100${cursor === undefined ? '' : `&cursor=${encodeURIComponent(cursor)}`}`,
          )
        ).body;
        total += page.items.length;
        for (const e of page.items) if (e.reason !== undefined && reasons.length < 3) reasons.push(e.reason);
        cursor = page.nextCursor;
      } while (cursor !== undefined);
      return { total, reasons };
    };
    const queued = await count('QUEUED');
    const failed = await count('FAILED');
    return {
      jobs,
      submitSeconds,
      drainSeconds,
      launched: launchedAt.length,
      launchesPerSecond: drainSeconds > 0 ? launchedAt.length / drainSeconds : 0,
      steadyLaunchesPerSecond: middle > 0 ? (0.8 * launchedAt.length) / middle : 0,
      throttled: deployment.throttledLaunches,
      queued: queued.total,
      failed: failed.total,
      failureReasons: [...new Set(failed.reasons)],
      slowest,
    };
  } finally {
    await deployment.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1]?.endsWith('emulated-drain.ts')) {
  const jobs = process.argv[2] === undefined ? undefined : Number(process.argv[2]);
  const say = (line: string) => process.stderr.write(`${line}\n`);
  console.log(await withDrainEmulators(say, (endpoints) => benchEmulatedDrain(endpoints, jobs, say)));
}
