// AWS API calls per execution on the happy path, counted by an SDK middleware on every client
// Ferry's code is given. One job goes through the handlers exactly as the Lambdas run them:
// POST /v1/jobs into `api`, its SQS message into `dispatcher`, RUNNING and STOPPED task state
// changes (built from DescribeTasks) into `task-events`, and GET …/result into `api`. What
// AWS itself does (the SQS event source receiving and deleting, EventBridge delivering, the
// publisher container writing the result) is the bench's own doing and not counted.
//
// Run directly against a running emulator: node --import tsx bench/aws-calls.ts <endpoint>
import { DescribeTasksCommand } from '@aws-sdk/client-ecs';
import { DeleteMessageCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { createApiHandler } from '../functions/api.ts';
import { createDispatcherHandler } from '../functions/dispatcher.ts';
import { createTaskEventsHandler } from '../functions/task-events.ts';
import type { Execution } from '../shared/domain/execution.ts';
import { silentLogger } from '../shared/logger.ts';
import { buildAwsCore } from '../shared/runtime/aws.ts';
import {
  type AwsEnvironment,
  awsClients,
  awsConfig,
  createAwsEnvironment,
  publishResult,
} from '../test/support/aws.ts';
import { apiEvent, lambdaContext, sqsEvent, taskEvent } from '../test/support/events.ts';
import { type RecordedCall, recordCalls } from '../test/support/sdk-faults.ts';

/** The handler invocations of one execution, in the order AWS makes them. */
export const STEPS = [
  'api POST /v1/jobs',
  'dispatcher (SQS batch of 1)',
  'task-events RUNNING',
  'task-events STOPPED',
  'api GET /v1/executions/{id}/result',
] as const;
export type Step = (typeof STEPS)[number];

export interface CallCount {
  readonly step: Step;
  readonly service: string;
  readonly operation: string;
  readonly count: number;
  /** What the call is for, in a few words. */
  readonly purpose: string;
}

export interface ExecutionCalls {
  readonly executionId: string;
  readonly total: number;
  /** Calls by handler step, then service and operation, in the order first made. */
  readonly calls: readonly CallCount[];
  /** The same calls summed over the steps, by service and operation. */
  readonly byOperation: readonly { service: string; operation: string; count: number }[];
}

export interface AwsCallsBench {
  /** The first execution of a deployment: cold functions, an image never launched before. */
  readonly first: ExecutionCalls;
  /** The next execution of the same image with every function warm: the steady state. */
  readonly warm: ExecutionCalls;
}

const PURPOSES: Readonly<Record<string, string>> = {
  'api POST /v1/jobs|DynamoDB.Query':
    'capacity picture for the bid estimate: active jobs by state, the head and age of the queue',
  'api POST /v1/jobs|DynamoDB.TransactWriteItems':
    'create the execution, already QUEUED (bid and accept in one write), and count it in the queue length',
  'api POST /v1/jobs|DynamoDB.GetItem':
    'read the queue length (and the oldest queued job when there is one: its index holds keys only)',
  'api POST /v1/jobs|SQS.SendMessage': 'the dispatch message',
  'dispatcher (SQS batch of 1)|DynamoDB.GetItem':
    "read the execution (state, dispatch token); the ledger's totals; the queue length; the oldest queued job",
  'dispatcher (SQS batch of 1)|DynamoDB.Query':
    'the head and age of the queue (what runs comes from the ledger, whatever the number)',
  'dispatcher (SQS batch of 1)|DynamoDB.TransactWriteItems':
    'reserve vCPU/memory in the capacity ledger; write LAUNCHING and take the job off the queue length',
  'dispatcher (SQS batch of 1)|DynamoDB.PutItem': 'record the task ARN and deadline',
  'dispatcher (SQS batch of 1)|ECS.DescribeTaskDefinition':
    "find the image's task definition (first launch per warm container)",
  'dispatcher (SQS batch of 1)|ECS.RegisterTaskDefinition': 'register it (first launch of an image ever)',
  'dispatcher (SQS batch of 1)|ECS.RunTask': 'start the Fargate task (client token = execution id)',
  'task-events RUNNING|DynamoDB.GetItem': 'read the execution (version, last event applied)',
  'task-events RUNNING|DynamoDB.PutItem': 'conditional write to RUNNING with the deadline',
  'task-events STOPPED|S3.GetObject': 'read result.json for the exit code and stream sizes',
  'task-events STOPPED|DynamoDB.GetItem': 'read the execution; read the ledger reservation to give back',
  'task-events STOPPED|DynamoDB.PutItem': 'conditional write to COMPLETED with the result',
  'task-events STOPPED|DynamoDB.TransactWriteItems': 'release the capacity reservation (exactly once)',
  'api GET /v1/executions/{id}/result|DynamoDB.GetItem': 'read the execution (ownership, review state)',
  'api GET /v1/executions/{id}/result|S3.GetObject':
    'read result.json (download links are signed locally: no call)',
};

const job = {
  image: 'public.ecr.aws/docker/library/alpine:3.20',
  command: ['echo', 'hello'],
  resources: { cpu: 1, memory: '2GiB' },
};

type Handlers = ReturnType<typeof deploy>;

/** One deployment's functions, built once as each Lambda does at cold start, on counted clients. */
function deploy(aws: AwsEnvironment, endpoint: string, calls: RecordedCall[]) {
  const clients = awsClients(endpoint);
  for (const client of Object.values(clients)) recordCalls(client, calls);
  // Each function is its own Lambda with its own clients and caches; here they share one
  // Core, which is what a cold dispatcher sees on the first job and a warm one afterwards.
  const core = buildAwsCore(awsConfig(aws), clients, silentLogger);
  return {
    api: createApiHandler(core),
    dispatcher: createDispatcherHandler(core),
    taskEvents: createTaskEventsHandler(core),
  };
}

async function runOne(
  aws: AwsEnvironment,
  handlers: Handlers,
  calls: RecordedCall[],
): Promise<ExecutionCalls> {
  const counted: { step: Step; call: RecordedCall }[] = [];
  async function step<T>(name: Step, act: () => Promise<T>): Promise<T> {
    const from = calls.length;
    const result = await act();
    for (const call of calls.slice(from)) counted.push({ step: name, call });
    return result;
  }

  const submitted = await step('api POST /v1/jobs', () =>
    handlers.api(apiEvent('POST', '/v1/jobs', { body: job }), lambdaContext),
  );
  if (submitted.statusCode !== 202)
    throw new Error(`POST /v1/jobs answered ${submitted.statusCode}: ${submitted.body}`);
  const id = (JSON.parse(submitted.body ?? '{}') as Execution).id;

  // The SQS event source mapping: receive, invoke, delete on success.
  const { Messages = [] } = await aws.clients.sqs.send(
    new ReceiveMessageCommand({ QueueUrl: aws.queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }),
  );
  if (Messages.length !== 1)
    throw new Error(`expected the one dispatch message, received ${Messages.length}`);
  const batch = await step('dispatcher (SQS batch of 1)', () =>
    handlers.dispatcher(sqsEvent(Messages), lambdaContext),
  );
  if (batch.batchItemFailures.length > 0) throw new Error('the dispatcher reported the message as failed');
  await aws.clients.sqs.send(
    new DeleteMessageCommand({ QueueUrl: aws.queueUrl, ReceiptHandle: Messages[0]?.ReceiptHandle }),
  );

  const launched = await readExecution(handlers, id);
  const taskArn = launched.task?.id;
  if (launched.state !== 'LAUNCHING' || taskArn === undefined) {
    throw new Error(`after dispatch the execution is ${launched.state} (${launched.reason ?? 'no reason'})`);
  }
  const described = await aws.clients.ecs.send(
    new DescribeTasksCommand({ cluster: aws.cluster, tasks: [taskArn] }),
  );
  const task = described.tasks?.[0];
  if (task === undefined) throw new Error(`ECS does not know task ${taskArn}`);

  await step('task-events RUNNING', () =>
    handlers.taskEvents(
      taskEvent(task, { lastStatus: 'RUNNING', desiredStatus: 'RUNNING', version: 2 }),
      lambdaContext,
    ),
  );
  await publishResult(aws, id, 'hello\n');
  await step('task-events STOPPED', () =>
    handlers.taskEvents(
      taskEvent(task, {
        lastStatus: 'STOPPED',
        desiredStatus: 'STOPPED',
        stopCode: 'EssentialContainerExited',
        stoppedReason: 'Essential container in task exited',
        stoppedAt: new Date().toISOString(),
        containers: [{ name: 'job', lastStatus: 'STOPPED', exitCode: 0 }],
        version: 3,
      }),
      lambdaContext,
    ),
  );
  const result = await step('api GET /v1/executions/{id}/result', () =>
    handlers.api(apiEvent('GET', `/v1/executions/${id}/result`), lambdaContext),
  );
  if (result.statusCode !== 200)
    throw new Error(`GET …/result answered ${result.statusCode}: ${result.body}`);
  const done = await readExecution(handlers, id);
  if (done.state !== 'COMPLETED') throw new Error(`the execution ended ${done.state}, not COMPLETED`);

  return summarise(id, counted);
}

/** Reads the execution through the API without counting: the bench's own look, not the job's path. */
async function readExecution(handlers: Handlers, id: string): Promise<Execution> {
  const reply = await handlers.api(apiEvent('GET', `/v1/executions/${id}`), lambdaContext);
  return JSON.parse(reply.body ?? '{}') as Execution;
}

function summarise(
  executionId: string,
  counted: readonly { step: Step; call: RecordedCall }[],
): ExecutionCalls {
  const calls: CallCount[] = [];
  for (const { step, call } of counted) {
    const index = calls.findIndex(
      (c) => c.step === step && c.service === call.service && c.operation === call.operation,
    );
    const existing = calls[index];
    if (existing !== undefined) calls[index] = { ...existing, count: existing.count + 1 };
    else {
      const purpose = PURPOSES[`${step}|${call.service}.${call.operation}`] ?? '(unexpected call)';
      calls.push({ step, service: call.service, operation: call.operation, count: 1, purpose });
    }
  }
  const byOperation: { service: string; operation: string; count: number }[] = [];
  for (const c of calls) {
    const same = byOperation.find((o) => o.service === c.service && o.operation === c.operation);
    if (same !== undefined) same.count += c.count;
    else byOperation.push({ service: c.service, operation: c.operation, count: c.count });
  }
  byOperation.sort((a, b) => a.service.localeCompare(b.service) || b.count - a.count);
  return { executionId, total: counted.length, calls, byOperation };
}

/**
 * Given an AWS API emulator at `endpoint` (moto server, or LocalStack), creates a fresh
 * environment on it and counts the calls Ferry makes for one execution on a cold deployment
 * and then for one more on the warm deployment. Starts nothing itself.
 */
export async function benchAwsCalls(endpoint: string): Promise<AwsCallsBench> {
  const aws = await createAwsEnvironment(endpoint);
  const calls: RecordedCall[] = [];
  const handlers = deploy(aws, endpoint, calls);
  const first = await runOne(aws, handlers, calls);
  const warm = await runOne(aws, handlers, calls);
  return { first, warm };
}

/** The bench as lines of a table, for a terminal. */
export function formatAwsCalls(bench: AwsCallsBench): string[] {
  const lines: string[] = [];
  const warmCount = (c: CallCount) =>
    bench.warm.calls.find((w) => w.step === c.step && w.service === c.service && w.operation === c.operation)
      ?.count ?? 0;
  const rows = bench.first.calls.map((c) => [
    c.step,
    `${c.service} ${c.operation}`,
    String(c.count),
    String(warmCount(c)),
    c.purpose,
  ]);
  const header = ['handler', 'call', 'first', 'warm', 'for'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === 2 || i === 3 ? cell.padStart(widths[i] ?? 0) : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  lines.push(line(header), widths.map((w) => '─'.repeat(w)).join('  '));
  let previous = '';
  for (const row of rows) {
    lines.push(line(row[0] === previous ? ['', ...row.slice(1)] : row));
    previous = row[0] ?? '';
  }
  lines.push(widths.map((w) => '─'.repeat(w)).join('  '));
  lines.push(
    line(['total', '', String(bench.first.total), String(bench.warm.total), 'AWS API calls per execution']),
  );
  lines.push('');
  const services = (run: ExecutionCalls) =>
    [...new Set(run.byOperation.map((o) => o.service))]
      .map((s) => `${s} ${run.byOperation.filter((o) => o.service === s).reduce((n, o) => n + o.count, 0)}`)
      .join(', ');
  lines.push(`by service, first: ${services(bench.first)}`);
  lines.push(`by service, warm:  ${services(bench.warm)}`);
  return lines;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const endpoint = process.argv[2] ?? process.env.AWS_ENDPOINT_URL;
  if (endpoint === undefined || endpoint === '') {
    console.error(
      'usage: node --import tsx bench/aws-calls.ts <emulator endpoint, e.g. http://127.0.0.1:5000>',
    );
    process.exit(2);
  }
  const bench = await benchAwsCalls(endpoint);
  console.log(`AWS API calls per execution (happy path, against ${endpoint})`);
  for (const line of formatAwsCalls(bench)) console.log(line);
}
