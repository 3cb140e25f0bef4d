// Output capture speed and memory: a child writes 1 GiB to its stdout, which is either discarded
// (the pipe's own speed, the baseline) or captured with a 10 MiB head+tail limit and finished.
// Each measurement runs in a fresh node process (`--measure raw|capture`) so that its peak RSS
// (`process.resourceUsage().maxRSS`) is that of the capture alone, not of the bench runner.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { dirname, resolve } from 'node:path';
import { finished } from 'node:stream/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { captureStream, StreamCapture } from '../shared/capture/stream-capture.ts';

const PRODUCED_BYTES = 1024 ** 3;
const STORED_LIMIT = 10 * 1024 * 1024;
const ROUNDS = 3;
const MiB = 1024 * 1024;

type Mode = 'raw' | 'capture';

interface Measurement {
  readonly mode: Mode;
  readonly seconds: number;
  readonly totalBytes: number;
  readonly storedBytes: number;
  /** Peak resident set of the measuring process, node and tsx included. */
  readonly peakRssMiB: number;
}

export interface CaptureBench {
  /** Median throughput of the pipe with the output discarded. */
  readonly rawMiBps: number;
  /** Median throughput of the same pipe through `captureStream` and `finish()`. */
  readonly captureMiBps: number;
  /** captureMiBps / rawMiBps. */
  readonly ratio: number;
  /** Highest peak RSS of a capturing process. */
  readonly peakRssMiB: number;
  /** Highest peak RSS of a discarding process: what node itself costs, for comparison. */
  readonly rawPeakRssMiB: number;
  readonly totalBytes: number;
  readonly storedBytes: number;
}

export async function benchCapture(): Promise<CaptureBench> {
  const runs: Measurement[] = [];
  // Interleaved, so that a slow moment of the machine does not land on one mode only.
  for (let round = 0; round < ROUNDS; round += 1) {
    runs.push(await measureInChild('raw'));
    runs.push(await measureInChild('capture'));
  }
  const raw = runs.filter((run) => run.mode === 'raw');
  const captured = runs.filter((run) => run.mode === 'capture');
  const rawMiBps = median(raw.map(throughput));
  const captureMiBps = median(captured.map(throughput));
  const last = captured.at(-1);
  return {
    rawMiBps,
    captureMiBps,
    ratio: captureMiBps / rawMiBps,
    peakRssMiB: Math.max(...captured.map((run) => run.peakRssMiB)),
    rawPeakRssMiB: Math.max(...raw.map((run) => run.peakRssMiB)),
    totalBytes: last?.totalBytes ?? 0,
    storedBytes: last?.storedBytes ?? 0,
  };
}

const throughput = (run: Measurement): number => run.totalBytes / MiB / run.seconds;

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

async function measureInChild(mode: Mode): Promise<Measurement> {
  const thisFile = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, ['--import', 'tsx', thisFile, '--measure', mode], {
    cwd: resolve(dirname(thisFile), '..'),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const reply: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => reply.push(chunk));
  await exitedCleanly(child, `bench child (${mode})`);
  return JSON.parse(Buffer.concat(reply).toString('utf8')) as Measurement;
}

async function measureHere(mode: Mode): Promise<Measurement> {
  const started = performance.now();
  const producer = spawn('head', ['-c', String(PRODUCED_BYTES), '/dev/zero'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const producerDone = exitedCleanly(producer, 'head -c … /dev/zero');
  let totalBytes = 0;
  let storedBytes = 0;
  if (mode === 'raw') {
    producer.stdout.on('data', (chunk: Buffer) => {
      totalBytes += chunk.length;
    });
    await finished(producer.stdout, { writable: false });
  } else {
    const capture = new StreamCapture({ storedBytes: STORED_LIMIT, inlineBytes: 4096, keep: 'head+tail' });
    await captureStream(producer.stdout, capture);
    const { summary } = capture.finish();
    totalBytes = summary.totalBytes;
    storedBytes = summary.storedBytes;
  }
  await producerDone;
  const seconds = (performance.now() - started) / 1000;
  // maxRSS is in KiB on Linux.
  const peakRssMiB = process.resourceUsage().maxRSS / 1024;
  return { mode, seconds, totalBytes, storedBytes, peakRssMiB };
}

async function exitedCleanly(child: ChildProcess, name: string): Promise<void> {
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  if (code !== 0) throw new Error(`${name} ended with ${signal ?? `exit code ${code}`}`);
}

function printTable(result: CaptureBench): void {
  const rows: [string, string][] = [
    ['produced', `${(result.totalBytes / MiB).toFixed(0)} MiB`],
    ['stored (10 MiB head+tail)', `${result.storedBytes} bytes`],
    ['pipe, discarded', `${result.rawMiBps.toFixed(0)} MiB/s`],
    ['pipe, captured', `${result.captureMiBps.toFixed(0)} MiB/s`],
    ['captured / discarded', result.ratio.toFixed(2)],
    ['peak RSS, capturing', `${result.peakRssMiB.toFixed(1)} MiB`],
    ['peak RSS, discarding', `${result.rawPeakRssMiB.toFixed(1)} MiB`],
  ];
  const width = Math.max(...rows.map(([name]) => name.length));
  for (const [name, value] of rows) console.log(`${name.padEnd(width)}  ${value}`);
}

const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  const measureFlag = process.argv.indexOf('--measure');
  const mode = process.argv[measureFlag + 1];
  if (measureFlag !== -1 && (mode === 'raw' || mode === 'capture')) {
    process.stdout.write(JSON.stringify(await measureHere(mode)));
  } else {
    printTable(await benchCapture());
  }
}
