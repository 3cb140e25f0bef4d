// The emulated AWS deployment for the end-to-end suites: `cdk synth` with bundling, the
// synthesized stack started on the AWS emulator with real containers, a caller signing with
// SigV4 as the CLI does, and the checks every test ends with (capacity released, every AWS
// call allowed by IAM).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SQSClient } from '@aws-sdk/client-sqs';
import Docker from 'dockerode';
import { inject } from 'vitest';
import { FerryClient, sigv4Signer } from '../../cli/client.ts';
import { DynamoCapacityLedger } from '../../shared/adapters/aws/dynamo-ledger.ts';
import type { RecordedCall } from '../../shared/adapters/emulated/aws-gateway.ts';
import { queueDepth } from '../../shared/adapters/emulated/sqs-poller.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import { createLogger } from '../../shared/logger.ts';
import { type Caller, EmulatedAwsDeployment } from '../../shared/runtime/emulated-aws.ts';
import { type Synthesized, synthFerry } from '../infra/synth.ts';
import { clientConfig, endpointFor, REGION } from './aws.ts';

export const TERMINAL = [
  'COMPLETED',
  'FAILED',
  'TIMED_OUT',
  'CANCELLED',
  'DECLINED',
  'BID_REJECTED',
  'EXPIRED',
];

const docker = new Docker();

/**
 * The runner image, built offline from this checkout under a tag of this run's own: several
 * checkouts may share the engine, and each must run its own wrapper and publisher.
 */
async function buildRunnerImage(): Promise<string> {
  const tag = `ferry-runner:emulated-${process.pid}-${Date.now().toString(36)}`;
  execFileSync('bash', ['scripts/build-runner-image.sh', tag], { stdio: 'ignore' });
  return tag;
}

export interface Harness {
  readonly deployment: EmulatedAwsDeployment;
  readonly synth: Synthesized;
  readonly caller: Caller;
  readonly client: FerryClient;
  /** Lines the functions wrote, newest last (for a failing test's message). */
  readonly functionLines: string[];
  clientFor(caller: Caller): FerryClient;
  submit(spec: Record<string, unknown>): Promise<Execution>;
  get(id: string): Promise<Execution>;
  /** Waits until the execution is in one of `states` (default: any terminal one). */
  waitFor(id: string, states?: readonly string[], timeoutMs?: number): Promise<Execution>;
  ledger(): Promise<{ cpu: number; memoryMiB: number; tasks: number; holders: readonly string[] }>;
  /** Waits for event deliveries to settle, then for the ledger to be empty. */
  expectLedgerEmpty(timeoutMs?: number): Promise<void>;
  deadLetterDepth(pattern: RegExp): Promise<number>;
  /** The calls IAM refused, since the given index of `deployment.calls`. */
  denied(since?: number): RecordedCall[];
  close(): Promise<void>;
}

export interface HarnessOptions {
  /** Edits the synthesized template before the deployment starts (a negative control). */
  readonly editTemplate?: (template: Record<string, unknown>) => void;
  readonly sweepOnSchedule?: boolean;
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const runnerImage = await buildRunnerImage();
  const synth = synthFerry({}, { bundle: true });
  if (options.editTemplate !== undefined) editAssemblyTemplate(synth, options.editTemplate);
  const functionLines: string[] = [];
  const deployment = await EmulatedAwsDeployment.start({
    assemblyDir: synth.outdir,
    endpoints: emulatorEndpoints(),
    docker,
    runnerImage,
    sweepOnSchedule: options.sweepOnSchedule ?? false,
    log: createLogger((process.env.FERRY_TEST_LOG as 'debug' | 'warn' | undefined) ?? 'error'),
    functionLog: (name, line) => {
      if (process.env.FERRY_TEST_LOG === 'debug') process.stderr.write(`${name}: ${line}\n`);
      functionLines.push(`${name.replace(/^ferry-[0-9a-f]+-Executor/, '')}: ${line}`);
      if (functionLines.length > 2000) functionLines.splice(0, 1000);
    },
  });
  const clientFor = (caller: Caller) =>
    new FerryClient(
      deployment.apiUrl,
      undefined,
      sigv4Signer({
        region: REGION,
        credentials: { accessKeyId: caller.accessKeyId, secretAccessKey: caller.secretAccessKey },
      }),
    );
  const caller = deployment.addCaller('alice');
  const client = clientFor(caller);
  const ledger = new DynamoCapacityLedger(
    deployment.ref(/^ExecutorTable/),
    new DynamoDBClient(accountConfig('dynamodb')),
  );
  const sqs = new SQSClient(accountConfig('sqs'));

  const get = async (id: string) => (await client.json<Execution>('GET', `/v1/executions/${id}`)).body;
  const harness: Harness = {
    deployment,
    synth,
    caller,
    client,
    functionLines,
    clientFor,
    async submit(spec) {
      return (await client.json<Execution>('POST', '/v1/jobs', spec)).body;
    },
    get,
    async waitFor(id, states = TERMINAL, timeoutMs = 40_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const execution = await get(id);
        if (states.includes(execution.state)) return execution;
        if (Date.now() > deadline) {
          throw new Error(
            `${id} is ${execution.state}, not ${states.join('|')}, after ${timeoutMs} ms: ${JSON.stringify(execution.history)}; last function lines:\n${functionLines.slice(-30).join('\n')}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    },
    async ledger() {
      return { ...(await ledger.totals()), holders: await ledger.holders() };
    },
    async expectLedgerEmpty(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        await deployment.eventsSettled();
        const now = await harness.ledger();
        if (now.tasks === 0 && now.cpu === 0 && now.memoryMiB === 0 && now.holders.length === 0) return;
        if (Date.now() > deadline) throw new Error(`the capacity ledger still holds ${JSON.stringify(now)}`);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    },
    async deadLetterDepth(pattern) {
      const name = deployment.ref(pattern).split('/').pop();
      return queueDepth(sqs, `${endpointFor('sqs')}/123456789012/${name}`);
    },
    denied(since = 0) {
      return deployment.calls.slice(since).filter((call) => call.authorizations.some((a) => !a.allowed));
    },
    async close() {
      await deployment.close();
      synth.cleanup();
      await docker
        .getImage(runnerImage)
        .remove({ force: true })
        .catch(() => undefined);
    },
  };
  return harness;
}

/** A client of the deployment's account (LocalStack takes a twelve-digit key as the account). */
function accountConfig(service: 'dynamodb' | 'sqs') {
  return { ...clientConfig(service), credentials: { accessKeyId: '123456789012', secretAccessKey: 'test' } };
}

/**
 * Where each service answers, by SigV4 signing name: under FERRY_TEST_AWS=localstack S3, SQS
 * and EventBridge are LocalStack's, the rest moto's.
 */
function emulatorEndpoints(): { default: string } & Record<string, string> {
  const services = inject('awsServiceEndpoints');
  const endpoints: { default: string } & Record<string, string> = { default: inject('awsEndpoint') };
  for (const [service, endpoint] of Object.entries(services)) {
    if (endpoint !== undefined) endpoints[service === 'eventbridge' ? 'events' : service] = endpoint;
  }
  return endpoints;
}

/** Rewrites the stack's template in the cloud assembly, as a hand-edited deployment would be. */
function editAssemblyTemplate(synth: Synthesized, edit: (template: Record<string, unknown>) => void): void {
  const artifact = synth.assembly.stacks[0];
  if (artifact === undefined) throw new Error('the assembly has no stack');
  const file = artifact.templateFullPath;
  const template = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(template);
  fs.writeFileSync(file, JSON.stringify(template));
}

/** A one-line account of each call IAM refused, for assertion messages. */
export function describeDenials(calls: readonly RecordedCall[]): string {
  return calls
    .map((call) => {
      const refused = call.authorizations.filter((a) => !a.allowed).map((a) => a.explanation);
      return `${call.principal} ${call.service}:${call.operation}: ${refused.join('; ')}`;
    })
    .join('\n');
}
