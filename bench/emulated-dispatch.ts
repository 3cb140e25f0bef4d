// Ferry's own latency on the emulated deployment: from the API's 202 for a submitted job to
// the dispatcher's RunTask, through API Gateway's front, the bundled functions, SQS's event
// source and IAM's check of every call. Tasks are not realised as containers here: this
// measures Ferry, not Docker.
//
// Run directly against a running emulator: node --import tsx bench/emulated-dispatch.ts <endpoint>
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FerryClient, sigv4Signer } from '../cli/client.ts';
import { synthesize } from '../cli/emulate.ts';
import type { Execution } from '../shared/domain/execution.ts';
import { silentLogger } from '../shared/logger.ts';
import { EmulatedAwsDeployment } from '../shared/runtime/emulated-aws.ts';

export interface EmulatedDispatchBench {
  readonly samplesMs: readonly number[];
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly callsPerExecution: number;
}

const quantile = (sorted: readonly number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;

/** A caller allowed to invoke the deployment's API, with the CLI's SigV4-signing client. */
export function benchCaller(deployment: EmulatedAwsDeployment): FerryClient {
  const caller = deployment.addCaller('bench');
  return new FerryClient(
    deployment.apiUrl,
    undefined,
    sigv4Signer({
      region: 'us-east-1',
      credentials: { accessKeyId: caller.accessKeyId, secretAccessKey: caller.secretAccessKey },
    }),
  );
}

export async function benchEmulatedDispatch(endpoint: string, rounds = 20): Promise<EmulatedDispatchBench> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-synth-'));
  synthesize(dir, process.env);
  const deployment = await EmulatedAwsDeployment.start({
    assemblyDir: dir,
    endpoints: { default: endpoint },
    sweepOnSchedule: false,
    log: silentLogger,
  });
  try {
    const client = benchCaller(deployment);
    const samples: number[] = [];
    const callsBefore = deployment.calls.length;
    // Two untimed rounds warm the functions' environments, as a deployment in use is warm.
    for (let round = -2; round < rounds; round += 1) {
      const seen = deployment.calls.length;
      await client.json<Execution>('POST', '/v1/jobs', { image: 'busybox:latest', command: ['true'] });
      const answered = Date.now();
      for (;;) {
        const launch = deployment.calls
          .slice(seen)
          .find((c) => c.service === 'ecs' && c.operation === 'RunTask');
        if (launch !== undefined) {
          if (round >= 0) samples.push(Date.parse(launch.at) - answered);
          break;
        }
        if (Date.now() - answered > 30_000) throw new Error('no RunTask within 30 s of the answer');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
    const sorted = [...samples].sort((a, b) => a - b);
    // The event source's polls are Lambda's, not Ferry's: left out.
    const mine = deployment.calls
      .slice(callsBefore)
      .filter((c) => c.service !== 'execute-api' && c.operation !== 'ReceiveMessage');
    return {
      samplesMs: samples,
      p50Ms: quantile(sorted, 0.5),
      p90Ms: quantile(sorted, 0.9),
      callsPerExecution: mine.length / (rounds + 2),
    };
  } finally {
    await deployment.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1]?.endsWith('emulated-dispatch.ts')) {
  const endpoint = process.argv[2];
  if (endpoint === undefined) throw new Error('usage: emulated-dispatch.ts <emulator endpoint>');
  console.log(await benchEmulatedDispatch(endpoint));
}
