// `npm run bench`: Ferry's speed and memory goals, measured in one run and printed side by
// side with their baselines and targets. A MISS is reported, not thrown: the exit code is 0
// unless a measurement itself could not be made.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import os from 'node:os';
import Docker from 'dockerode';
import { startMoto } from '../test/support/moto.ts';
import { benchAwsCalls, formatAwsCalls } from './aws-calls.ts';
import { benchCapture, type CaptureBench } from './capture.ts';
import { benchCliStart, type CliStartBench } from './cli-start.ts';
import { benchDashboard } from './dashboard.ts';
import { benchData, type DataBench } from './data.ts';
import { benchDockerOutput, type DockerOutputBench, OUTPUT_IMAGE } from './docker-output.ts';
import { benchEmulatedDispatch } from './emulated-dispatch.ts';
import { benchEmulatedDrain, FARGATE_LAUNCHES_PER_SECOND, withDrainEmulators } from './emulated-drain.ts';
import { benchLatency, LATENCY_IMAGE, type LatencyBench } from './latency.ts';
import { benchPublisher, type PublisherBench } from './publisher.ts';
import { benchQueueCost, formatQueueCost } from './queue-cost.ts';
import { benchSubmissions, JOURNAL_BASELINE, type SubmissionsBench } from './submissions.ts';
import { benchThroughput, type ThroughputBench } from './throughput.ts';

const LATENCY_ROUNDS = 25;
/** Runs of each output shape, through Ferry and under plain docker run (the median of each is compared). */
const OUTPUT_ROUNDS = 5;
const LATENCY_WARMUP = 3;
const THROUGHPUT_JOBS = 200;
const THROUGHPUT_CONCURRENCY = 8;
const SUBMISSIONS = 2000;
const SUBMISSION_PARALLELISM = 16;
/** Jobs queued, then drained through the emulated deployment (FERRY_BENCH_DRAIN_JOBS for a shorter run). */
const DRAIN_JOBS = Number(process.env.FERRY_BENCH_DRAIN_JOBS ?? 10_000);
/** The dispatcher keeps up with Fargate when it launches at 95 % of the launch rate or more. */
const DRAIN_TARGET_RATIO = 0.95;

const TARGET_LATENCY_RATIO = 1.1;
const TARGET_CAPTURE_RATIO = 0.5;
const TARGET_CAPTURE_RSS_MB = 150;
/** A fresh `ferry` process answering a person, in ms. */
const TARGET_CLI_START_MS = 300;
const CLI_START_RUNS = 7;
/** Ferry's time over `docker run --log-driver none`'s, per output shape. */
const TARGET_OUTPUT_RATIOS: readonly number[] = [1.5, 1.2];
const MB_PER_MiB = (1024 * 1024) / 1e6;

type Verdict = 'PASS' | 'MISS' | '';

interface Row {
  readonly measure: string;
  readonly ferry: string;
  readonly baseline: string;
  readonly ratio: string;
  readonly target: string;
  readonly verdict: Verdict;
}

async function machine(): Promise<string[]> {
  const cpus = os.cpus();
  let dockerVersion = 'unreachable';
  try {
    const version = await new Docker().version();
    dockerVersion = `${version.Version} (API ${version.ApiVersion}, ${version.Os}/${version.Arch})`;
  } catch (error) {
    dockerVersion = `unreachable: ${(error as Error).message}`;
  }
  return [
    `cores   ${cpus.length} × ${cpus[0]?.model.trim() ?? 'unknown CPU'}`,
    `memory  ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB total, ${(os.freemem() / 1024 ** 3).toFixed(1)} GiB free`,
    `os      ${os.type()} ${os.release()} ${os.arch()}`,
    `node    ${process.version}`,
    `docker  server ${dockerVersion}`,
    `load    ${loadAverage()} at start (other work on the machine makes every figure noisier)`,
  ];
}

const loadAverage = (): string =>
  `1/5/15-min load average ${os
    .loadavg()
    .map((v) => v.toFixed(2))
    .join(' / ')}`;

/** The process backend's ceiling without Ferry: `true` spawned directly, as many at a time. */
async function rawSpawnJobsPerSecond(jobs: number, parallelism: number): Promise<number> {
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < jobs) {
      next += 1;
      const child = spawn('true', [], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.resume();
      child.stderr.resume();
      const [code] = (await once(child, 'close')) as [number | null];
      if (code !== 0) throw new Error(`true exited ${code}`);
    }
  };
  await Promise.all(Array.from({ length: parallelism }, worker));
  return jobs / ((performance.now() - started) / 1000);
}

const ms = (value: number): string => `${value.toFixed(0)} ms`;
const verdict = (ok: boolean): Verdict => (ok ? 'PASS' : 'MISS');

function latencyRows(result: LatencyBench): Row[] {
  const p90Ratio = result.ferry.p90 / result.docker.p90;
  return [
    {
      measure: `1. submit→finished, echo hello, p50 (n=${result.ferry.samplesMs.length} each)`,
      ferry: ms(result.ferry.p50),
      baseline: `${ms(result.docker.p50)} docker run`,
      ratio: result.ratio.toFixed(3),
      target: `≤ ${TARGET_LATENCY_RATIO.toFixed(2)}`,
      verdict: verdict(result.ratio <= TARGET_LATENCY_RATIO),
    },
    {
      measure: '   submit→finished, p90',
      ferry: ms(result.ferry.p90),
      baseline: `${ms(result.docker.p90)} docker run`,
      ratio: p90Ratio.toFixed(3),
      target: '',
      verdict: '',
    },
    {
      measure: '   submit→finished, min … max',
      ferry: `${result.ferry.min.toFixed(0)}…${result.ferry.max.toFixed(0)} ms`,
      baseline: `${result.docker.min.toFixed(0)}…${result.docker.max.toFixed(0)} ms`,
      ratio: '',
      target: '',
      verdict: '',
    },
  ];
}

function outputRows(result: DockerOutputBench): Row[] {
  const peakMB = result.serverPeakRssMiB * MB_PER_MiB;
  const rows = result.shapes.map((shape, i): Row => {
    const target = TARGET_OUTPUT_RATIOS[i] ?? 1.2;
    return {
      measure: `${i === 0 ? '6.' : '  '} Docker backend output: ${shape.shape.name}, 1 MiB kept, median of ${result.rounds}`,
      ferry: ms(shape.ferry.p50),
      baseline: `${ms(shape.floor.p50)} docker run --log-driver none`,
      ratio: shape.ratio.toFixed(3),
      target: `≤ ${target.toFixed(2)}`,
      verdict: verdict(shape.ratio <= target),
    };
  });
  return [
    ...rows,
    {
      measure: '   Docker backend output: peak RSS of the server over those runs',
      ferry: `${peakMB.toFixed(1)} MB`,
      baseline: '',
      ratio: '',
      target: `< ${TARGET_CAPTURE_RSS_MB} MB`,
      verdict: verdict(peakMB < TARGET_CAPTURE_RSS_MB),
    },
  ];
}

function cliStartRows(result: CliStartBench): Row[] {
  return [
    {
      measure: `7. CLI start: ferry --version, built by npm ci, median of ${result.runs}`,
      ferry: ms(result.versionBuiltMs),
      baseline: `${ms(result.versionSourcesMs)} from sources, ${ms(result.versionNpxMs)} npx ferry`,
      ratio: (result.versionBuiltMs / result.versionSourcesMs).toFixed(3),
      target: `< ${TARGET_CLI_START_MS} ms`,
      verdict: verdict(result.versionBuiltMs < TARGET_CLI_START_MS),
    },
    {
      measure: '   CLI start: ferry ls (20 executions, process backend)',
      ferry: ms(result.lsBuiltMs),
      baseline: `${ms(result.lsSourcesMs)} from sources`,
      ratio: (result.lsBuiltMs / result.lsSourcesMs).toFixed(3),
      target: `< ${TARGET_CLI_START_MS} ms`,
      verdict: verdict(result.lsBuiltMs < TARGET_CLI_START_MS),
    },
  ];
}

function throughputRows(result: ThroughputBench, rawJobsPerSecond: number): Row[] {
  return [
    {
      measure: `2. process backend, ${result.jobs} × \`true\` (${result.cpuPerJob} vCPU), max ${result.maxConcurrency} at once`,
      ferry: `${result.jobsPerSecond.toFixed(1)} jobs/s`,
      baseline: `${rawJobsPerSecond.toFixed(0)} jobs/s raw spawn`,
      ratio: (result.jobsPerSecond / rawJobsPerSecond).toFixed(3),
      target: '(report)',
      verdict: '',
    },
    {
      measure: '   all terminal after / all accepted after',
      ferry: `${result.seconds.toFixed(2)} s / ${result.submitSeconds.toFixed(2)} s`,
      baseline: '',
      ratio: '',
      target: `${result.completed}/${result.jobs} COMPLETED`,
      verdict: '',
    },
  ];
}

/** A TES task is the same job in another shape: creating one should cost about the same. */
const TARGET_TES_RATIO = 0.9;

function submissionRows(result: SubmissionsBench): Row[] {
  return [
    {
      measure: `5. submissions through the store: ${result.submissions} × POST /v1/bids with Idempotency-Key, ${result.parallelism} at once`,
      ferry: `${result.httpPerSecond.toFixed(0)} /s`,
      baseline: `${JOURNAL_BASELINE.httpPerSecond} /s journal store`,
      ratio: (result.httpPerSecond / JOURNAL_BASELINE.httpPerSecond).toFixed(3),
      target: '(report)',
      verdict: '',
    },
    {
      measure: `   TES: POST /ga4gh/tes/v1/tasks beside POST /v1/jobs, ${result.tesPerRound} each, median of ${result.tesRounds}`,
      ferry: `${result.tesPerSecond.toFixed(0)} /s`,
      baseline: `${result.jobsPerSecond.toFixed(0)} /s POST /v1/jobs`,
      ratio: (result.tesPerSecond / result.jobsPerSecond).toFixed(3),
      target: `≥ ${TARGET_TES_RATIO.toFixed(2)}`,
      verdict: verdict(result.tesPerSecond / result.jobsPerSecond >= TARGET_TES_RATIO),
    },
    {
      measure: '   store only: create + one conditional update, one at a time',
      ferry: `${result.storePerSecond.toFixed(0)} /s`,
      baseline: `${JOURNAL_BASELINE.storePerSecond} /s journal store`,
      ratio: (result.storePerSecond / JOURNAL_BASELINE.storePerSecond).toFixed(3),
      target: '(report)',
      verdict: '',
    },
  ];
}

function captureRows(result: CaptureBench): Row[] {
  const peakMB = result.peakRssMiB * MB_PER_MiB;
  const rawPeakMB = result.rawPeakRssMiB * MB_PER_MiB;
  return [
    {
      measure: `3. capture ${(result.totalBytes / 1024 ** 3).toFixed(0)} GiB stdout, 10 MiB head+tail: throughput`,
      ferry: `${result.captureMiBps.toFixed(0)} MiB/s`,
      baseline: `${result.rawMiBps.toFixed(0)} MiB/s raw pipe`,
      ratio: result.ratio.toFixed(3),
      target: `≥ ${TARGET_CAPTURE_RATIO.toFixed(2)}`,
      verdict: verdict(result.ratio >= TARGET_CAPTURE_RATIO),
    },
    {
      measure: '   capture: peak RSS of the capturing process',
      ferry: `${peakMB.toFixed(1)} MB`,
      baseline: `${rawPeakMB.toFixed(1)} MB raw pipe`,
      ratio: (peakMB / rawPeakMB).toFixed(3),
      target: `< ${TARGET_CAPTURE_RSS_MB} MB`,
      verdict: verdict(peakMB < TARGET_CAPTURE_RSS_MB),
    },
  ];
}

function publisherRows(result: PublisherBench): Row[] {
  const peakMB = result.peakRssMiB * MB_PER_MiB;
  return [
    {
      measure: '4. Fargate publisher: 1 GiB via wrapper + FIFO to S3, 10 MiB kept, median of 3',
      ferry: `${result.publisherMiBps.toFixed(0)} MiB/s`,
      baseline: `${result.rawMiBps.toFixed(0)} MiB/s FIFO to cat`,
      ratio: result.ratio.toFixed(3),
      target: `≥ ${TARGET_CAPTURE_RATIO.toFixed(2)}`,
      verdict: verdict(result.ratio >= TARGET_CAPTURE_RATIO),
    },
    {
      measure: '   publisher: peak RSS (bundled, as in the runner image)',
      ferry: `${peakMB.toFixed(1)} MB`,
      baseline: '',
      ratio: '',
      target: `< ${TARGET_CAPTURE_RSS_MB} MB`,
      verdict: verdict(peakMB < TARGET_CAPTURE_RSS_MB),
    },
  ];
}

/** Staging and collection beside a plain SDK download and upload of the same bytes. */
const TARGET_DATA_RATIO = 0.8;
/** Peak memory of staging and collection against the plain SDK's for the same bytes. */
const TARGET_DATA_RSS_RATIO = 1.15;

function dataRows(result: DataBench): Row[] {
  const stage = result.stageMiBps / result.downloadMiBps;
  const collect = result.collectMiBps / result.uploadMiBps;
  // The worse of the two sides.
  const memory = Math.max(
    result.stagePeakRssMiB / result.downloadPeakRssMiB,
    result.collectPeakRssMiB / result.uploadPeakRssMiB,
  );
  const rss = (mib: number) => `${(mib * MB_PER_MiB).toFixed(1)} MB`;
  return [
    {
      measure: `8. inputs: stage 1 GiB from S3 (emulated), median of ${result.rounds}`,
      ferry: `${result.stageMiBps.toFixed(0)} MiB/s`,
      baseline: `${result.downloadMiBps.toFixed(0)} MiB/s SDK GetObject`,
      ratio: stage.toFixed(3),
      target: `≥ ${TARGET_DATA_RATIO.toFixed(2)}`,
      verdict: verdict(stage >= TARGET_DATA_RATIO),
    },
    {
      measure: `   outputs: collect 1 GiB into S3 (emulated), median of ${result.rounds}`,
      ferry: `${result.collectMiBps.toFixed(0)} MiB/s`,
      baseline: `${result.uploadMiBps.toFixed(0)} MiB/s SDK Upload`,
      ratio: collect.toFixed(3),
      target: `≥ ${TARGET_DATA_RATIO.toFixed(2)}`,
      verdict: verdict(collect >= TARGET_DATA_RATIO),
    },
    {
      // Each side runs in a process of its own under tsx, whose own footprint is most of it: the
      // goal is memory like the plain SDK's for the same bytes, whatever their size.
      measure: '   peak RSS of the staging process / the collecting process',
      ferry: `${rss(result.stagePeakRssMiB)} / ${rss(result.collectPeakRssMiB)}`,
      baseline: `${rss(result.downloadPeakRssMiB)} / ${rss(result.uploadPeakRssMiB)} SDK`,
      ratio: memory.toFixed(3),
      target: `≤ ${TARGET_DATA_RSS_RATIO.toFixed(2)}`,
      verdict: verdict(memory <= TARGET_DATA_RSS_RATIO),
    },
  ];
}

function printTable(rows: readonly Row[]): void {
  const header: Row = {
    measure: 'measure',
    ferry: 'Ferry',
    baseline: 'baseline',
    ratio: 'ratio',
    target: 'target',
    verdict: 'result' as Verdict,
  };
  const columns = ['measure', 'ferry', 'baseline', 'ratio', 'target', 'verdict'] as const;
  const all = [header, ...rows];
  const widths = columns.map((column) => Math.max(...all.map((row) => row[column].length)));
  const line = (row: Row) =>
    columns
      .map((column, i) => {
        const width = widths[i] ?? 0;
        return column === 'ratio' ? row[column].padStart(width) : row[column].padEnd(width);
      })
      .join('  ')
      .trimEnd();
  console.log(line(header));
  console.log(widths.map((w) => '─'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
}

async function main(): Promise<void> {
  const started = performance.now();
  const info = await machine();
  const step = (text: string) =>
    process.stderr.write(`[bench +${((performance.now() - started) / 1000).toFixed(0)}s] ${text}\n`);

  step(
    `1/13 latency: Ferry (Docker backend) vs docker run, ${LATENCY_IMAGE}, ${LATENCY_WARMUP} warm-up + ${LATENCY_ROUNDS} interleaved rounds`,
  );
  const latency = await benchLatency({ rounds: LATENCY_ROUNDS, warmup: LATENCY_WARMUP });
  step(
    `2/13 output through the Docker backend vs docker run --log-driver none, ${OUTPUT_IMAGE}, 1 warm-up + ${OUTPUT_ROUNDS} interleaved rounds per shape`,
  );
  const output = await benchDockerOutput(OUTPUT_ROUNDS);
  step(`3/13 CLI start: ferry --version and ferry ls, built and from sources, ${CLI_START_RUNS} runs each`);
  const cliStart = await benchCliStart(CLI_START_RUNS);
  step(`4/13 throughput: ${THROUGHPUT_JOBS} jobs on the process backend`);
  const rawSpawn = await rawSpawnJobsPerSecond(THROUGHPUT_JOBS, THROUGHPUT_CONCURRENCY);
  const throughput = await benchThroughput({
    jobs: THROUGHPUT_JOBS,
    maxConcurrency: THROUGHPUT_CONCURRENCY,
    clientParallelism: 16,
  });
  step(
    `5/13 submissions: ${SUBMISSIONS} bids over HTTP, ${SUBMISSIONS} records through the store, TES tasks beside /v1 jobs`,
  );
  const submissions = await benchSubmissions({
    submissions: SUBMISSIONS,
    parallelism: SUBMISSION_PARALLELISM,
  });
  step('6/13 capture: 1 GiB of stdout, 3 rounds each of raw pipe and capture');
  const capture = await benchCapture();
  const moto = await startMoto();
  step('7/13 Fargate publisher: 1 GiB through the wrapper and FIFOs into emulated S3, 3 interleaved rounds');
  const publisher = await benchPublisher(moto.endpoint).catch(async (error) => {
    await moto.stop();
    throw error;
  });
  step('8/13 data: 1 GiB staged from and collected into emulated S3, beside plain SDK calls, 3 rounds');
  const data = await benchData(moto.endpoint).catch(async (error) => {
    await moto.stop();
    throw error;
  });
  step('9/13 AWS API calls per execution, counted against moto server');
  const awsCalls = await benchAwsCalls(moto.endpoint).catch(async (error) => {
    await moto.stop();
    throw error;
  });
  step('10/13 DynamoDB reads per bid and per dispatch with 10, 1,000 and 10,000 jobs queued');
  const queueCost = await benchQueueCost(moto.endpoint).catch(async (error) => {
    await moto.stop();
    throw error;
  });
  step('11/13 the emulated deployment: from the API answer to RunTask, through the synthesized stack');
  const emulated = await benchEmulatedDispatch(moto.endpoint).catch(async (error) => {
    await moto.stop();
    throw error;
  });
  step(
    `12/13 the emulated deployment: ${DRAIN_JOBS.toLocaleString('en')} queued jobs drained against Fargate's launch rate`,
  );
  await moto.stop();
  const drain = await withDrainEmulators(
    (line) => step(`    ${line}`),
    (endpoints) => benchEmulatedDrain(endpoints, DRAIN_JOBS, (line) => step(`    ${line}`)),
  );
  const drainRatio = drain.steadyLaunchesPerSecond / FARGATE_LAUNCHES_PER_SECOND;
  step(
    '13/13 the dashboard in Chromium: the list with 10,000 executions stored, a job page with 100 MB of output',
  );
  const dashboard = await benchDashboard(LATENCY_IMAGE);

  const rows: Row[] = [
    ...latencyRows(latency),
    ...throughputRows(throughput, rawSpawn),
    ...captureRows(capture),
    ...publisherRows(publisher),
    ...submissionRows(submissions),
    ...outputRows(output),
    ...cliStartRows(cliStart),
    ...dataRows(data),
    {
      measure: `13. dashboard: the executions page, ${dashboard.stored.toLocaleString('en')} executions stored, to its first page shown`,
      ferry: `${dashboard.listMs.toFixed(0)} ms`,
      baseline: '',
      ratio: '',
      target: '< 1000 ms',
      verdict: dashboard.listMs < 1000 ? 'PASS' : 'MISS',
    },
    {
      measure: `    a job page with ${(dashboard.outputBytes / 1e6).toFixed(0)} MB of stdout: first page / the last page after a click`,
      ferry: `${dashboard.outputFirstMs.toFixed(0)} / ${dashboard.outputLastMs.toFixed(0)} ms`,
      baseline: '',
      ratio: '',
      target: '< 1000 ms each',
      verdict: dashboard.outputFirstMs < 1000 && dashboard.outputLastMs < 1000 ? 'PASS' : 'MISS',
    },
    {
      measure: '    the longest busy stretch of the page’s main thread on both pages',
      ferry: `${dashboard.longestTaskMs.toFixed(0)} ms`,
      baseline: '',
      ratio: '',
      target: '< 200 ms',
      verdict: dashboard.longestTaskMs < 200 ? 'PASS' : 'MISS',
    },
  ];
  console.log('');
  console.log(`Ferry benchmark, ${new Date().toISOString()}`);
  for (const text of info) console.log(`  ${text}`);
  console.log('');
  printTable(rows);
  console.log('');
  const misses = rows.filter((row) => row.verdict === 'MISS');
  console.log(
    misses.length === 0
      ? 'all targets: PASS'
      : `MISS on ${misses.length} target(s): ${misses.map((row) => row.measure.replace(/^\d\.\s*|^\s+/, '')).join('; ')}`,
  );
  console.log(
    `samples (ms): ferry [${latency.ferry.samplesMs.map((v) => v.toFixed(0)).join(' ')}]` +
      `  docker run [${latency.docker.samplesMs.map((v) => v.toFixed(0)).join(' ')}]`,
  );
  console.log('');
  for (const shape of output.shapes) {
    console.log(
      `samples (ms), ${shape.shape.name}: ferry [${shape.ferry.samplesMs.map((v) => v.toFixed(0)).join(' ')}]` +
        `  docker run [${shape.floor.samplesMs.map((v) => v.toFixed(0)).join(' ')}]`,
    );
  }
  console.log('');
  console.log(
    'AWS API calls per execution (happy path, through the Lambda handlers; first = new image, warm = cached):',
  );
  for (const text of formatAwsCalls(awsCalls)) console.log(`  ${text}`);
  console.log('');
  console.log('DynamoDB reads per bid and per dispatch by queue length (flat is the goal):');
  for (const text of formatQueueCost(queueCost)) console.log(`  ${text}`);
  console.log('');
  console.log('The emulated deployment (cdk synth bundle, API front with SigV4 and IAM, SQS event source):');
  console.log(
    `  API answer → RunTask  p50 ${emulated.p50Ms} ms  p90 ${emulated.p90Ms} ms  (goal p50 < 500 ms: ${
      emulated.p50Ms < 500 ? 'PASS' : 'MISS'
    }; ${emulated.samplesMs.length} jobs, warm)`,
  );
  console.log(
    `  AWS calls from submission to launch, per execution: ${emulated.callsPerExecution} (the event source's polls left out)`,
  );
  console.log(
    `  ${drain.jobs.toLocaleString('en')} queued jobs drained: ${drain.launched} launched in ${drain.drainSeconds.toFixed(0)} s, ` +
      `${drain.launchesPerSecond.toFixed(1)}/s overall, ${drain.steadyLaunchesPerSecond.toFixed(1)}/s steady ` +
      `(ratio to Fargate's ${FARGATE_LAUNCHES_PER_SECOND}/s: ${drainRatio.toFixed(3)}; goal >= ${DRAIN_TARGET_RATIO} with none left or failed: ${
        drainRatio >= DRAIN_TARGET_RATIO && drain.queued === 0 && drain.failed === 0 ? 'PASS' : 'MISS'
      })`,
  );
  console.log(
    `  ${drain.throttled} RunTask calls refused by the launch rate and retried; ${drain.queued} left QUEUED, ${drain.failed} FAILED` +
      (drain.failureReasons.length === 0 ? '' : ` (${drain.failureReasons.join('; ')})`) +
      `; queueing them took ${drain.submitSeconds.toFixed(0)} s`,
  );
  console.log(
    `  the drain's costliest AWS calls (emulator time included): ${drain.slowest
      .map((s) => `${s.operation} ${s.calls}× ${s.meanMs} ms`)
      .join(', ')}`,
  );
  console.log('');
  console.log(
    `submission baselines: the JSON-lines journal store, measured on ${JOURNAL_BASELINE.measuredOn}; ` +
      'the database syncs each commit to disk (synchronous=FULL), the journal never synced.',
  );
  console.log(`${loadAverage()} at the end`);
  console.log(`total bench time ${((performance.now() - started) / 1000).toFixed(0)} s`);
}

await main();
