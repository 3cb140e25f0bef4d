// The IAM check of the emulated deployment, on its own: requests the real AWS SDK sends are
// read into the actions and resources IAM decides on, their SigV4 signatures verified again,
// and each decided with the IAM policy simulator against the policies the synthesized
// template gives each role — conditions and the bucket's own policy included.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  ECSClient,
  RegisterTaskDefinitionCommand,
  RunTaskCommand,
  StopTaskCommand,
} from '@aws-sdk/client-ecs';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient, TransactWriteCommand } from '@aws-sdk/lib-dynamodb';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeAwsRequest, type ResourceLookup } from '../../shared/adapters/emulated/aws-request.ts';
import { checkAuthorization, type PrincipalPolicies } from '../../shared/adapters/emulated/iam-check.ts';
import { type SignedRequest, verifySignature } from '../../shared/adapters/emulated/sigv4-verify.ts';
import {
  type PolicyDocument,
  physicalNames,
  Resolver,
  rolePolicies,
  type Template,
} from '../../shared/adapters/emulated/template.ts';
import { synthFerry } from '../infra/synth.ts';

const PSEUDO = { accountId: '123456789012', region: 'us-east-1', stackName: 'Ferry' };
const KEY = { accessKeyId: 'AKIAEMULATED0001', secretAccessKey: 'emulated/secret+key' };

let template: Template;
let resolver: Resolver;
let names: ReturnType<typeof physicalNames>;
let endpoint: string;
let server: http.Server;
const received: SignedRequest[] = [];

beforeAll(async () => {
  const synth = synthFerry();
  template = synth.template.toJSON() as Template;
  synth.cleanup();
  names = physicalNames(template, PSEUDO, 'ferry-test');
  resolver = new Resolver(names, PSEUDO);
  // Stands in for AWS: keeps each request as it arrived and answers with an empty success.
  server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(request.headers)) headers[name] = String(value);
      received.push({
        method: request.method ?? 'GET',
        url: request.url ?? '/',
        headers,
        body: Buffer.concat(chunks),
      });
      response.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
      response.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, 120_000);
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const config = () => ({ endpoint, region: PSEUDO.region, credentials: KEY, maxAttempts: 1 });

/** The request the SDK put on the wire for `send` (whatever the stand-in's answer made of it). */
async function wire(send: () => Promise<unknown>): Promise<SignedRequest> {
  const before = received.length;
  await send().catch(() => undefined);
  const request = received[before];
  if (request === undefined) throw new Error('the SDK sent nothing');
  return request;
}

const lookup: ResourceLookup = {
  accountId: PSEUDO.accountId,
  region: PSEUDO.region,
  queueArn: (url) => `arn:aws:sqs:${PSEUDO.region}:${PSEUDO.accountId}:${url.split('/').pop()}`,
};

function roleId(pattern: RegExp): string {
  const id = Object.keys(template.Resources).find(
    (key) => pattern.test(key) && template.Resources[key]?.Type === 'AWS::IAM::Role',
  );
  if (id === undefined) throw new Error(`no role matches ${pattern}`);
  return id;
}

function principal(
  pattern: RegExp,
  edit?: (statements: Record<string, unknown>[]) => Record<string, unknown>[],
) {
  const id = roleId(pattern);
  const policies = rolePolicies(
    { template, functions: [], resourcesOfType: () => policyResources() },
    id,
    resolver,
  );
  return {
    principalArn: names.get(id)?.attributes?.Arn ?? '',
    accountId: PSEUDO.accountId,
    policies: policies.map((p) => ({
      name: p.name,
      document:
        edit === undefined ? p.document : { ...p.document, Statement: edit([...p.document.Statement]) },
    })),
  } satisfies PrincipalPolicies;
}

function policyResources() {
  return Object.entries(template.Resources).filter(([, r]) => r.Type === 'AWS::IAM::Policy');
}

function bucketPolicy(): PolicyDocument {
  const [, policy] =
    Object.entries(template.Resources).find(([, r]) => r.Type === 'AWS::S3::BucketPolicy') ?? [];
  return resolver.resolve(policy?.Properties?.PolicyDocument ?? null) as unknown as PolicyDocument;
}

const physical = (type: string, attribute?: string) => {
  const [id] = Object.entries(template.Resources).find(([, r]) => r.Type === type) ?? [];
  const found = names.get(String(id));
  return attribute === undefined ? String(found?.ref) : String(found?.attributes?.[attribute]);
};

async function decide(who: PrincipalPolicies, request: SignedRequest, resourcePolicy?: PolicyDocument) {
  const facts = describeAwsRequest(request, lookup);
  const verdicts = await Promise.all(
    facts.authorizations.map((a) => checkAuthorization(who, a, resourcePolicy)),
  );
  return { facts, verdicts, allowed: verdicts.length > 0 && verdicts.every((v) => v.allowed) };
}

describe('reading requests the SDK sends', () => {
  it('names the actions, resources and condition keys IAM decides on', async () => {
    const ecs = new ECSClient(config());
    const cluster = physical('AWS::ECS::Cluster');
    const run = describeAwsRequest(
      await wire(() =>
        ecs.send(
          new RunTaskCommand({
            cluster,
            taskDefinition: 'ferry-abc:3',
            tags: [{ key: 'ferry:execution', value: 'x' }],
          }),
        ),
      ),
      lookup,
    );
    expect(run).toMatchObject({ service: 'ecs', operation: 'RunTask', accessKeyId: KEY.accessKeyId });
    expect(run.authorizations).toEqual([
      {
        action: 'ecs:RunTask',
        resource: `arn:aws:ecs:us-east-1:123456789012:task-definition/ferry-abc:3`,
        context: { 'ecs:cluster': physical('AWS::ECS::Cluster', 'Arn') },
      },
      {
        action: 'ecs:TagResource',
        resource: `arn:aws:ecs:us-east-1:123456789012:task/${cluster}/*`,
        context: { 'ecs:CreateAction': 'RunTask' },
      },
    ]);

    const s3 = new S3Client({ ...config(), forcePathStyle: true });
    const list = describeAwsRequest(
      await wire(() => s3.send(new ListObjectsV2Command({ Bucket: 'b', Prefix: 'executions/e1/' }))),
      lookup,
    );
    expect(list.authorizations[0]).toMatchObject({
      action: 's3:ListBucket',
      resource: 'arn:aws:s3:::b',
      context: { 's3:prefix': 'executions/e1/' },
    });

    const transact = describeAwsRequest(
      await wire(() =>
        DynamoDBDocumentClient.from(new DynamoDBClient(config())).send(
          new TransactWriteCommand({
            TransactItems: [
              { Put: { TableName: 't1', Item: { pk: 'a' } } },
              {
                Update: {
                  TableName: 't1',
                  Key: { pk: 'b' },
                  UpdateExpression: 'SET x = :x',
                  ExpressionAttributeValues: { ':x': 1 },
                },
              },
            ],
          }),
        ),
      ),
      lookup,
    );
    expect(transact.authorizations.map((a) => a.action)).toEqual(['dynamodb:PutItem', 'dynamodb:UpdateItem']);
  });

  it('verifies SigV4 as signed, and refuses a wrong secret, a changed body or an old date', async () => {
    const s3 = new S3Client({ ...config(), forcePathStyle: true });
    const put = await wire(() =>
      s3.send(new PutObjectCommand({ Bucket: 'b', Key: 'executions/e 1/ä+b.txt', Body: 'hello' })),
    );
    const sqs = await wire(() =>
      new SQSClient({ ...config(), useQueueUrlAsEndpoint: false }).send(
        new SendMessageCommand({ QueueUrl: `${endpoint}/123456789012/q`, MessageBody: '{"id":"e1"}' }),
      ),
    );
    const secretOf = (key: string) =>
      key === KEY.accessKeyId ? { secretAccessKey: KEY.secretAccessKey } : undefined;
    for (const request of [put, sqs])
      expect(await verifySignature(request, secretOf)).toMatchObject({ ok: true });

    const link = new URL(
      await getSignedUrl(s3, new GetObjectCommand({ Bucket: 'b', Key: 'executions/e1/stdout' }), {
        expiresIn: 60,
      }),
    );
    const presigned = {
      method: 'GET',
      url: link.pathname + link.search,
      headers: { host: link.host },
      body: Buffer.alloc(0),
    };
    expect(await verifySignature(presigned, secretOf)).toMatchObject({ ok: true });
    expect(await verifySignature(presigned, secretOf, new Date(Date.now() + 120_000))).toMatchObject({
      ok: false,
      message: 'Request has expired',
    });

    expect(await verifySignature(sqs, () => ({ secretAccessKey: 'wrong' }))).toMatchObject({
      ok: false,
      code: 'SignatureDoesNotMatch',
    });
    // The body no longer matches the payload hash the client signed.
    expect(await verifySignature({ ...sqs, body: Buffer.from('{"id":"e2"}') }, secretOf)).toMatchObject({
      ok: false,
      code: 'XAmzContentSHA256Mismatch',
    });
    const restated = {
      ...sqs.headers,
      'x-amz-content-sha256': createHash('sha256').update('{"id":"e2"}').digest('hex'),
    };
    expect(
      await verifySignature({ ...sqs, headers: restated, body: Buffer.from('{"id":"e2"}') }, secretOf),
    ).toMatchObject({ ok: false, code: 'SignatureDoesNotMatch' });
    expect(await verifySignature(sqs, secretOf, new Date(Date.now() + 20 * 60_000))).toMatchObject({
      ok: false,
    });
    expect(await verifySignature(sqs, () => undefined)).toMatchObject({
      ok: false,
      code: 'InvalidClientTokenId',
    });
  });
});

describe('deciding with the synthesized policies', () => {
  it('allows what each role is granted, within its conditions, and nothing past them', async () => {
    const ecs = new ECSClient(config());
    const s3 = new S3Client({ ...config(), forcePathStyle: true });
    const cluster = physical('AWS::ECS::Cluster');
    const bucket = physical('AWS::S3::Bucket');
    const dispatcher = principal(/^ExecutorDispatcherFunctionRole/);
    const taskEvents = principal(/^ExecutorTaskEventsFunctionRole/);
    const api = principal(/^ExecutorApiFunctionRole/);

    const runTask = await wire(() =>
      ecs.send(new RunTaskCommand({ cluster, taskDefinition: 'ferry-abc:3' })),
    );
    expect((await decide(dispatcher, runTask)).allowed).toBe(true);
    expect((await decide(api, runTask)).allowed).toBe(false);
    // The same call on another cluster, or of a task definition that is not Ferry's.
    const elsewhere = await wire(() =>
      ecs.send(new RunTaskCommand({ cluster: 'other', taskDefinition: 'ferry-abc:3' })),
    );
    expect((await decide(dispatcher, elsewhere)).allowed).toBe(false);
    const foreign = await wire(() => ecs.send(new RunTaskCommand({ cluster, taskDefinition: 'admin:1' })));
    expect((await decide(dispatcher, foreign)).allowed).toBe(false);

    const taskRole = physical('AWS::IAM::Role', 'Arn');
    const register = await wire(() =>
      ecs.send(
        new RegisterTaskDefinitionCommand({
          family: 'ferry-abc',
          containerDefinitions: [{ name: 'job', image: 'busybox' }],
          taskRoleArn: names.get(roleId(/^ExecutorTaskRole/))?.attributes?.Arn,
          executionRoleArn: names.get(roleId(/^ExecutorTaskExecutionRole/))?.attributes?.Arn,
        }),
      ),
    );
    const registered = await decide(dispatcher, register);
    expect(registered.facts.authorizations.map((a) => a.action)).toEqual([
      'ecs:RegisterTaskDefinition',
      'iam:PassRole',
      'iam:PassRole',
    ]);
    expect(registered.allowed).toBe(true);
    const passAnother = await wire(() =>
      ecs.send(
        new RegisterTaskDefinitionCommand({
          family: 'ferry-abc',
          containerDefinitions: [{ name: 'job', image: 'busybox' }],
          taskRoleArn: `arn:aws:iam::123456789012:role/admin-${taskRole.length}`,
        }),
      ),
    );
    expect((await decide(dispatcher, passAnother)).allowed).toBe(false);

    const resultOf = await wire(() =>
      s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'executions/e1/result.json' })),
    );
    expect((await decide(taskEvents, resultOf, bucketPolicy())).allowed).toBe(true);
    const stdoutOf = await wire(() =>
      s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'executions/e1/stdout' })),
    );
    expect((await decide(taskEvents, stdoutOf, bucketPolicy())).allowed).toBe(false);
    const overwrite = await wire(() =>
      s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'executions/e1/result.json', Body: '{}' })),
    );
    expect((await decide(taskEvents, overwrite, bucketPolicy())).allowed).toBe(false);

    // s3:prefix is a condition: listing under executions/ is granted, anywhere else is not.
    const listOwn = await wire(() =>
      s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'executions/e1/' })),
    );
    expect((await decide(api, listOwn, bucketPolicy())).allowed).toBe(true);
    const listAll = await wire(() =>
      s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'publish/' })),
    );
    expect((await decide(api, listAll, bucketPolicy())).allowed).toBe(false);
  });

  it('lets a task call the upload-links route of its API and nothing else, and touch no result', async () => {
    const task = principal(/^ExecutorTaskRole/);
    const apiId = physical('AWS::ApiGatewayV2::Api');
    const bucket = physical('AWS::S3::Bucket');
    const invoke = (route: string, api = apiId) =>
      checkAuthorization(task, {
        action: 'execute-api:Invoke',
        resource: `arn:aws:execute-api:us-east-1:123456789012:${api}/$default/${route}`,
        context: {},
      });
    const onBucket = (action: string, resource: string) =>
      checkAuthorization(task, { action, resource, context: {} }, bucketPolicy());

    expect((await invoke('POST/v1/executions/ex_e1/uploads')).allowed).toBe(true);
    for (const route of [
      'GET/v1/executions',
      'GET/v1/executions/ex_e1',
      'GET/v1/executions/ex_e1/result',
      'POST/v1/jobs',
      'POST/v1/executions/ex_e1/cancel',
      'GET/v1/executions/ex_e1/uploads',
    ]) {
      expect((await invoke(route)).allowed, route).toBe(false);
    }
    expect((await invoke('POST/v1/executions/ex_e1/uploads', 'otherapi01')).allowed).toBe(false);
    for (const [action, resource] of [
      ['s3:PutObject', `arn:aws:s3:::${bucket}/executions/e1/result.json`],
      ['s3:DeleteObject', `arn:aws:s3:::${bucket}/executions/e1/live/stdout`],
      ['s3:AbortMultipartUpload', `arn:aws:s3:::${bucket}/executions/e1/stdout`],
      ['s3:GetObject', `arn:aws:s3:::${bucket}/executions/e1/stdout`],
      ['s3:ListBucket', `arn:aws:s3:::${bucket}`],
    ] as const) {
      expect((await onBucket(action, resource)).allowed, action).toBe(false);
    }
  });

  it("applies the bucket's own policy: a request without TLS is explicitly denied", async () => {
    const api = principal(/^ExecutorApiFunctionRole/);
    const bucket = physical('AWS::S3::Bucket');
    const verdict = await checkAuthorization(
      api,
      {
        action: 's3:GetObject',
        resource: `arn:aws:s3:::${bucket}/executions/e1/stdout`,
        context: { 'aws:SecureTransport': 'false' },
      },
      bucketPolicy(),
    );
    expect(verdict).toMatchObject({ allowed: false });
    expect(verdict.explanation).toContain('explicitly denied');
  });

  it('is live: removing a grant from the template turns an allowed call into a denial', async () => {
    const ecs = new ECSClient(config());
    const cluster = physical('AWS::ECS::Cluster');
    const request = await wire(() => ecs.send(new StopTaskCommand({ cluster, task: 'abc123' })));
    const sweeper = principal(/^ExecutorSweeperFunctionRole/);
    expect((await decide(sweeper, request)).allowed).toBe(true);
    const withoutStop = principal(/^ExecutorSweeperFunctionRole/, (statements) =>
      statements.filter((s) => !JSON.stringify(s.Action).includes('ecs:StopTask')),
    );
    const denied = await decide(withoutStop, request);
    expect(denied.allowed).toBe(false);
    expect(denied.verdicts[0]?.explanation).toContain('ecs:StopTask');
  });
});
