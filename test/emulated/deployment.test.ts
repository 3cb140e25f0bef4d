// Ferry on AWS end to end: the stack `cdk synth` writes, with its bundled functions, run as an
// emulated deployment — API Gateway with IAM auth, the SQS event source, EventBridge rules,
// the sweeper — on the AWS emulator, every RunTask realised as real containers (init, job,
// publisher) on the local Docker Engine. Every AWS call each function and task makes is
// checked against its role's policies from the template; each test ends with no denied call
// and the capacity ledger back to zero.
import { createHash } from 'node:crypto';
import { ECSClient, StopTaskCommand } from '@aws-sdk/client-ecs';
import { EventBridgeClient, ListRulesCommand } from '@aws-sdk/client-eventbridge';
import { ListBucketsCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { GetQueueUrlCommand, SQSClient } from '@aws-sdk/client-sqs';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Execution } from '../../shared/domain/execution.ts';
import { endpointFor, REGION } from '../support/aws.ts';
import { describeDenials, type Harness, startHarness } from '../support/emulated-aws.ts';

if (!inject('dockerAvailable') && process.env.CI === 'true') {
  throw new Error('CI=true but no Docker Engine: the emulated deployment cannot run tasks');
}

const image = inject('testImage');
let h: Harness;
let callsBefore = 0;

beforeAll(async () => {
  h = await startHarness();
}, 180_000);
afterAll(async () => {
  await h?.close();
});
afterEach(async () => {
  h.deployment.taskEventFilter = (event) => [event];
  await h.expectLedgerEmpty();
  const denied = h.denied(callsBefore);
  callsBefore = h.deployment.calls.length;
  expect(denied, describeDenials(denied)).toEqual([]);
});

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const stdoutOf = async (id: string) => (await h.client.bytes(`/v1/executions/${id}/logs?stream=stdout`)).body;
const stderrOf = async (id: string) => (await h.client.bytes(`/v1/executions/${id}/logs?stream=stderr`)).body;
/** The task of a RUNNING execution, once its job and publisher containers both run. */
const taskOf = async (id: string): Promise<string> => {
  const running = await h.waitFor(id, ['RUNNING']);
  const arn = running.task?.id;
  if (arn === undefined) throw new Error(`${id} is RUNNING without a task`);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const containers = h.deployment.realiser?.describe(arn)?.containers ?? [];
    if (containers.filter((c) => c.lastStatus === 'RUNNING').length >= 2) return arn;
    if (Date.now() > deadline) throw new Error(`${arn}: containers ${JSON.stringify(containers)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
};

/** Holds image pulls (tasks stay PENDING) until the returned function is called. */
const pullsHeld = (): (() => void) => {
  const release = h.deployment.realiser?.holdPulls();
  if (release === undefined) throw new Error('the deployment realises no tasks');
  return release;
};
/** The task of an execution, once it is PENDING with no container started. */
const pendingTaskOf = async (id: string): Promise<string> => {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const arn = (await h.get(id)).task?.id;
    const task = arn === undefined ? undefined : h.deployment.realiser?.describe(arn);
    if (arn !== undefined && task?.lastStatus === 'PENDING') return arn;
    if (Date.now() > deadline) throw new Error(`${id} has no PENDING task: ${JSON.stringify(task)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
};

describe.skipIf(!inject('dockerAvailable'))('the deployed stack, with real containers', () => {
  it('runs a job to the end: output stored, exit code recorded, result readable', async () => {
    const submitted = await h.submit({ image, command: ['sh', '-c', 'echo hello; printf oops >&2'] });
    expect(submitted.state).toBe('QUEUED');
    const done = await h.waitFor(submitted.id);
    expect(done.state).toBe('COMPLETED');
    expect(done.exitCode).toBe(0);
    expect((await stdoutOf(done.id)).toString()).toBe('hello\n');
    expect((await stderrOf(done.id)).toString()).toBe('oops');
    const result = await h.client.json<{ manifest: { stdout: { totalBytes: number }; exitCode: number } }>(
      'GET',
      `/v1/executions/${done.id}/result`,
    );
    expect(result.body.manifest).toMatchObject({ exitCode: 0, stdout: { totalBytes: 6 } });
    // The publisher ran under the task role, the functions under theirs.
    const principals = new Set(h.deployment.calls.slice(callsBefore).map((c) => c.principal));
    expect([...principals].some((p) => /TaskRole/.test(p))).toBe(true);
    expect([...principals].some((p) => /DispatcherFunctionRole/.test(p))).toBe(true);
  });

  it('records a non-zero exit as COMPLETED with its code', async () => {
    const submitted = await h.submit({ image, command: ['sh', '-c', 'echo failing >&2; exit 7'] });
    const done = await h.waitFor(submitted.id);
    expect(done.state).toBe('COMPLETED');
    expect(done.exitCode).toBe(7);
    expect((await stderrOf(done.id)).toString()).toBe('failing\n');
  });

  it('truncates 100 MB of output at its limit, byte-exact, and counts every byte', async () => {
    const limit = 1024 * 1024;
    const submitted = await h.submit({
      image,
      command: ['sh', '-c', 'seq 1 20000000 | head -c 100000000'],
      outputLimits: { stdoutBytes: limit, keep: 'head' },
    });
    const done = await h.waitFor(submitted.id, undefined, 120_000);
    expect(done.state).toBe('COMPLETED');
    expect(done.result?.stdout).toEqual({ totalBytes: 100_000_000, storedBytes: limit, truncated: true });
    let expected = '';
    for (let i = 1; expected.length < limit; i += 1) expected += `${i}\n`;
    const stored = await stdoutOf(done.id);
    expect(stored.length).toBe(limit);
    expect(sha256(stored)).toBe(sha256(expected.slice(0, limit)));
  }, 180_000);

  it('stops a job at its timeout: TIMED_OUT, task gone, capacity released', async () => {
    const submitted = await h.submit({ image, command: ['sleep', '60'], timeoutSeconds: 2 });
    const done = await h.waitFor(submitted.id, undefined, 60_000);
    expect(done.state).toBe('TIMED_OUT');
  });

  it('cancels a queued job before it launches and a running one while it runs', async () => {
    const running = await h.submit({ image, command: ['sleep', '60'] });
    await taskOf(running.id);
    const asked = Date.now();
    const cancelled = await h.client.json<Execution>('POST', `/v1/executions/${running.id}/cancel`);
    expect(['CANCELLED', 'RUNNING']).toContain(cancelled.body.state);
    expect((await h.waitFor(running.id)).state).toBe('CANCELLED');
    // The job took the stop at once: no stop timeout ran out.
    expect(Date.now() - asked).toBeLessThan(15_000);

    const bid = await h.client.json<{ executionId: string }>('POST', '/v1/bids', {
      image,
      command: ['true'],
    });
    await h.client.json('POST', `/v1/bids/${bid.body.executionId}/accept`);
    const queued = await h.client.json<Execution>('POST', `/v1/executions/${bid.body.executionId}/cancel`);
    expect(queued.status).toBeLessThan(300);
    const ended = await h.waitFor(bid.body.executionId);
    expect(ended.state).toBe('CANCELLED');
  });

  it('ends FAILED with the reason when the image cannot be pulled', async () => {
    const submitted = await h.submit({ image: 'ferry-test:no-such-tag', command: ['true'] });
    const done = await h.waitFor(submitted.id);
    expect(done.state).toBe('FAILED');
    expect(done.reason).toMatch(/CannotPullContainerError/);
  });

  it('cancels a job whose task is stopped before its publisher starts', async () => {
    // Its images still being pulled, so no container has started when the cancel comes.
    const release = pullsHeld();
    try {
      const submitted = await h.submit({ image, command: ['sleep', '60'] });
      const arn = await pendingTaskOf(submitted.id);
      const asked = Date.now();
      await h.client.json('POST', `/v1/executions/${submitted.id}/cancel`);
      const done = await h.waitFor(submitted.id);
      expect(done.state).toBe('CANCELLED');
      expect(Date.now() - asked).toBeLessThan(15_000);
      const containers = h.deployment.realiser?.describe(arn)?.containers ?? [];
      expect(containers.length).toBeGreaterThan(0);
      expect(containers.every((c) => c.exitCode === undefined)).toBe(true);
    } finally {
      release();
    }
  });

  it('ends FAILED with the reason when an operator stops the task before its publisher starts', async () => {
    const release = pullsHeld();
    try {
      const submitted = await h.submit({ image, command: ['true'] });
      const arn = await pendingTaskOf(submitted.id);
      const operator = h.deployment.addUser('operator', [
        { Effect: 'Allow', Action: 'ecs:StopTask', Resource: '*' },
      ]);
      const ecs = new ECSClient({
        region: REGION,
        endpoint: h.deployment.awsEndpoint,
        credentials: { accessKeyId: operator.accessKeyId, secretAccessKey: operator.secretAccessKey },
      });
      const cluster = arn.split('/')[1];
      await ecs.send(new StopTaskCommand({ cluster, task: arn, reason: 'Drained for maintenance' }));
      const done = await h.waitFor(submitted.id);
      expect(done.state).toBe('FAILED');
      expect(done.reason).toMatch(/Drained for maintenance/);
      const task = h.deployment.realiser?.describe(arn);
      expect(task?.stopCode).toBe('UserInitiated');
      expect(task?.containers?.every((c) => c.exitCode === undefined)).toBe(true);
    } finally {
      release();
    }
  });

  it('ends FAILED when the publisher crashes, and releases the capacity', async () => {
    const submitted = await h.submit({ image, command: ['sleep', '30'] });
    const arn = await taskOf(submitted.id);
    h.deployment.realiser?.crashContainer(arn, 'ferry-publisher');
    const done = await h.waitFor(submitted.id);
    expect(done.state).toBe('FAILED');
    expect(done.reason).toBeTruthy();
  });

  it('ends FAILED on a Fargate Spot interruption, not COMPLETED with 143', async () => {
    const submitted = await h.submit({ image, command: ['sleep', '30'] });
    const arn = await taskOf(submitted.id);
    h.deployment.realiser?.interrupt(arn);
    const done = await h.waitFor(submitted.id);
    expect(done.state).toBe('FAILED');
    expect(done.reason).toMatch(/Spot/);
  });

  it('finishes a run whose STOPPED (and DEPROVISIONING) events were lost within two sweeps', async () => {
    // Every event that tells the job ended (DEPROVISIONING and STOPPED) is lost.
    h.deployment.taskEventFilter = (event) =>
      event.detail.lastStatus === 'STOPPED' || event.detail.lastStatus === 'DEPROVISIONING' ? [] : [event];
    const submitted = await h.submit({ image, command: ['sh', '-c', 'echo done'] });
    // The job may well have ended by the time RUNNING is reported: its task, whatever it does.
    const arn = (await h.waitFor(submitted.id, ['RUNNING'])).task?.id ?? '';
    await h.deployment.realiser?.settled();
    await h.deployment.eventsSettled();
    const before = await h.get(submitted.id);
    expect(before.state, JSON.stringify(before.history)).toBe('RUNNING');
    expect(arn).toContain(':task/');
    // The sweeper notes the stop the first time, and applies it once 30 s have passed.
    h.deployment.advanceClock(5_000);
    const first = await h.deployment.sweep();
    expect(first.ok).toBe(true);
    h.deployment.advanceClock(31_000);
    const second = await h.deployment.sweep();
    expect(second.ok).toBe(true);
    const done = await h.get(submitted.id);
    expect(done.state).toBe('COMPLETED');
    expect((await stdoutOf(done.id)).toString()).toBe('done\n');
  });

  it('reaches the right end when every event comes twice and out of order', async () => {
    const held: Parameters<typeof h.deployment.taskEventFilter>[0][] = [];
    h.deployment.taskEventFilter = (event) => {
      held.push(event);
      if (event.detail.lastStatus !== 'STOPPED') return [];
      // Everything at once, newest first, each twice.
      return [...held].reverse().flatMap((e) => [e, e]);
    };
    const submitted = await h.submit({ image, command: ['sh', '-c', 'echo twice; exit 4'] });
    const done = await h.waitFor(submitted.id);
    expect(done.state).toBe('COMPLETED');
    expect(done.exitCode).toBe(4);
    expect((await stdoutOf(done.id)).toString()).toBe('twice\n');
  });
});

describe.skipIf(!inject('dockerAvailable'))('what a job can do with its task role', () => {
  it('cannot list executions or overwrite another execution result: IAM refuses both', async () => {
    const other = await h.waitFor((await h.submit({ image, command: ['echo', 'mine'] })).id);
    expect(other.state).toBe('COMPLETED');
    const job = await h.submit({ image, command: ['sleep', '30'] });
    const arn = await taskOf(job.id);
    // What the job's container can reach: the credentials endpoint in its own environment.
    const credentialsUri = (await h.deployment.realiser?.environmentOf(arn, 'job'))
      ?.AWS_CONTAINER_CREDENTIALS_FULL_URI;
    expect(credentialsUri).toBeDefined();
    const credentials = (await (await fetch(credentialsUri as string)).json()) as {
      AccessKeyId: string;
      SecretAccessKey: string;
      Token: string;
    };
    const s3 = new S3Client({
      region: 'us-east-1',
      endpoint: h.deployment.gateway.url,
      forcePathStyle: true,
      maxAttempts: 1,
      credentials: {
        accessKeyId: credentials.AccessKeyId,
        secretAccessKey: credentials.SecretAccessKey,
        sessionToken: credentials.Token,
      },
    });
    const bucket = h.deployment.ref(/^ExecutorResults[0-9A-F]+$/);
    const since = h.deployment.calls.length;
    await expect(
      s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'executions/' })),
    ).rejects.toMatchObject({ name: 'AccessDenied' });
    await expect(
      s3.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: `executions/${other.id}/result.json`,
          Body: '{"exitCode":0}',
        }),
      ),
    ).rejects.toMatchObject({ name: 'AccessDenied' });
    const refused = h.denied(since).map((c) => `${c.operation} ${c.authorizations[0]?.action}`);
    expect(refused).toEqual(['ListObjectsV2 s3:ListBucket', 'PutObject s3:PutObject']);
    // The other execution's result is as its own publisher stored it.
    expect((await stdoutOf(other.id)).toString()).toBe('mine\n');
    await h.client.json('POST', `/v1/executions/${job.id}/cancel`);
    expect((await h.waitFor(job.id)).state).toBe('CANCELLED');
    callsBefore = h.deployment.calls.length;
  });
});

describe.skipIf(!inject('dockerAvailable'))('where the deployment lives', () => {
  it('keeps its bucket, queues and rules on the emulator each service is configured for', async () => {
    // Asked of each emulator directly, not through the deployment's endpoint.
    const account = (service: 's3' | 'sqs' | 'eventbridge') => ({
      region: REGION,
      endpoint: endpointFor(service),
      credentials: { accessKeyId: '123456789012', secretAccessKey: 'test' },
      forcePathStyle: true,
    });
    const buckets = await new S3Client(account('s3')).send(new ListBucketsCommand({}));
    expect(buckets.Buckets?.map((b) => b.Name)).toContain(h.deployment.ref(/^ExecutorResults[0-9A-F]+$/));
    const queue =
      h.deployment
        .ref(/^ExecutorDispatch[0-9A-F]+$/)
        .split('/')
        .pop() ?? '';
    const found = await new SQSClient(account('sqs')).send(new GetQueueUrlCommand({ QueueName: queue }));
    expect(found.QueueUrl).toContain(queue);
    const rules = await new EventBridgeClient(account('eventbridge')).send(new ListRulesCommand({}));
    const patterns = (rules.Rules ?? []).map(
      (r) => JSON.parse(r.EventPattern ?? '{}') as { source?: string[] },
    );
    expect(patterns.some((p) => p.source?.includes('aws.ecs'))).toBe(true);
    expect(inject('awsServiceEndpoints').s3 !== undefined).toBe(process.env.FERRY_TEST_AWS === 'localstack');
  });
});

describe.skipIf(!inject('dockerAvailable'))('the IAM check is live', () => {
  let broken: Harness;
  beforeAll(async () => {
    // The task-events function loses its read of results, as a hand-edited template would.
    broken = await startHarness({
      editTemplate: (template) => {
        const resources = template.Resources as Record<
          string,
          { Type: string; Properties: Record<string, unknown> }
        >;
        for (const [id, resource] of Object.entries(resources)) {
          if (resource.Type !== 'AWS::IAM::Policy' || !/TaskEventsFunctionRole/.test(id)) continue;
          const document = resource.Properties.PolicyDocument as {
            Statement: { Action: string | string[] }[];
          };
          document.Statement = document.Statement.filter((s) => ![s.Action].flat().includes('s3:GetObject'));
        }
      },
    });
  }, 180_000);
  afterAll(async () => {
    await broken?.close();
  });

  it('refuses a call the template no longer grants, and the run cannot end well', async () => {
    const submitted = (await broken.client.json<Execution>('POST', '/v1/jobs', { image, command: ['true'] }))
      .body;
    const done = await broken.waitFor(submitted.id);
    expect(done.state).toBe('FAILED');
    expect(done.reason).toMatch(/result could not be read/);
    const refused = broken
      .denied()
      .map((c) => `${c.principal} ${c.authorizations.find((a) => !a.allowed)?.action}`);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.every((r) => /TaskEventsFunctionRole.* s3:GetObject/.test(r))).toBe(true);
    await broken.expectLedgerEmpty();
  });
});
