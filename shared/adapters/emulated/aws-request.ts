// Reads an AWS API request on the wire into what IAM decides on: the service and operation,
// the access key that signed it, and each action it needs on each resource with the request's
// condition keys. It covers the calls Ferry's functions and tasks make (DynamoDB, SQS, S3, ECS,
// EventBridge, Lambda) in the detail IAM evaluates them — an S3 copy needs s3:GetObject on the
// source as well as s3:PutObject on the target, a batch delete s3:DeleteObject on every key,
// a task definition's registration iam:PassRole on its roles — and any other call as
// `service:Operation` on `*`.
import { readSignature, type SignedRequest } from './sigv4-verify.ts';

export interface ResourceLookup {
  readonly accountId: string;
  readonly region: string;
  /** A queue's ARN from its URL (or the URL's path). */
  queueArn(queueUrl: string): string;
}

export interface Authorization {
  readonly action: string;
  readonly resource: string;
  readonly context: Readonly<Record<string, string | string[]>>;
}

export interface AwsRequestFacts {
  /** The SigV4 signing name: s3, sqs, dynamodb, ecs, events, lambda, … */
  readonly service: string;
  readonly operation: string;
  readonly accessKeyId?: string;
  readonly authorizations: readonly Authorization[];
}

export class UnreadableRequest extends Error {}

/** Every request arrives over TLS on AWS; S3's bucket policy refuses anything else. */
const TRANSPORT = { 'aws:SecureTransport': 'true' } as const;

export function describeAwsRequest(request: SignedRequest, lookup: ResourceLookup): AwsRequestFacts {
  const signature = readSignature(request);
  const target = request.headers['x-amz-target'];
  const service = signature?.service ?? serviceOfTarget(target) ?? 's3';
  const keyed = signature === undefined ? {} : { accessKeyId: signature.accessKeyId };
  const json = () => parseJson(request.body);
  const operation = target === undefined ? '' : target.slice(target.indexOf('.') + 1);
  switch (service) {
    case 'dynamodb':
      return { service, operation, ...keyed, authorizations: dynamodb(operation, json(), lookup) };
    case 'sqs':
      return { service, operation, ...keyed, authorizations: sqs(operation, json(), lookup) };
    case 'ecs':
      return { service, operation, ...keyed, authorizations: ecs(operation, json(), lookup) };
    case 'events':
      return { service, operation, ...keyed, authorizations: events(operation, json(), lookup) };
    case 's3': {
      const described = s3(request);
      return { service, ...keyed, ...described };
    }
    case 'lambda': {
      const invoke = /^\/2015-03-31\/functions\/([^/]+)\/invocations/.exec(request.url);
      if (invoke?.[1] !== undefined) {
        const name = decodeURIComponent(invoke[1]);
        const resource = name.startsWith('arn:')
          ? name
          : `arn:aws:lambda:${lookup.region}:${lookup.accountId}:function:${name}`;
        return {
          service,
          operation: 'Invoke',
          ...keyed,
          authorizations: [{ action: 'lambda:InvokeFunction', resource, context: {} }],
        };
      }
      return { service, operation: request.url, ...keyed, authorizations: [anything('lambda', 'Unknown')] };
    }
    default: {
      const name = operation || queryAction(request) || 'Unknown';
      return { service, operation: name, ...keyed, authorizations: [anything(service, name)] };
    }
  }
}

function anything(service: string, operation: string): Authorization {
  return { action: `${service}:${operation}`, resource: '*', context: {} };
}

function serviceOfTarget(target: string | undefined): string | undefined {
  if (target === undefined) return undefined;
  if (target.startsWith('DynamoDB_')) return 'dynamodb';
  if (target.startsWith('AmazonSQS.')) return 'sqs';
  if (target.startsWith('AmazonEC2ContainerService')) return 'ecs';
  if (target.startsWith('AWSEvents.')) return 'events';
  return undefined;
}

function queryAction(request: SignedRequest): string | undefined {
  const fromUrl = new URLSearchParams(splitOnce(request.url, '?')[1]).get('Action');
  if (fromUrl !== null) return fromUrl;
  if ((request.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
    return new URLSearchParams(request.body.toString('utf8')).get('Action') ?? undefined;
  }
  return undefined;
}

type JsonObject = Record<string, unknown>;

function parseJson(body: Buffer): JsonObject {
  if (body.length === 0) return {};
  try {
    const value: unknown = JSON.parse(body.toString('utf8'));
    return value !== null && typeof value === 'object' ? (value as JsonObject) : {};
  } catch {
    throw new UnreadableRequest('the request body is not JSON');
  }
}

// ---- DynamoDB ----------------------------------------------------------------------------

function dynamodb(operation: string, input: JsonObject, lookup: ResourceLookup): Authorization[] {
  const table = (name: unknown) =>
    String(name).startsWith('arn:')
      ? String(name)
      : `arn:aws:dynamodb:${lookup.region}:${lookup.accountId}:table/${String(name)}`;
  const on = (action: string, resource: string): Authorization => ({
    action: `dynamodb:${action}`,
    resource,
    context: {},
  });
  switch (operation) {
    case 'TransactWriteItems': {
      const items = (input.TransactItems as JsonObject[] | undefined) ?? [];
      return items.flatMap((item) => {
        const [kind, detail] = Object.entries(item)[0] ?? [];
        const action = {
          Put: 'PutItem',
          Update: 'UpdateItem',
          Delete: 'DeleteItem',
          ConditionCheck: 'ConditionCheckItem',
        }[String(kind)];
        if (action === undefined) return [];
        return [on(action, table((detail as JsonObject).TableName))];
      });
    }
    case 'TransactGetItems':
      return ((input.TransactItems as JsonObject[] | undefined) ?? []).map((item) =>
        on('GetItem', table((item.Get as JsonObject | undefined)?.TableName)),
      );
    case 'BatchGetItem':
    case 'BatchWriteItem':
      return Object.keys((input.RequestItems as JsonObject | undefined) ?? {}).map((name) =>
        on(operation, table(name)),
      );
    case 'Query':
    case 'Scan': {
      const base = table(input.TableName);
      return [
        on(operation, input.IndexName === undefined ? base : `${base}/index/${String(input.IndexName)}`),
      ];
    }
    default:
      return [on(operation, input.TableName === undefined ? '*' : table(input.TableName))];
  }
}

// ---- SQS -----------------------------------------------------------------------------------

/** SQS authorizes a batch as the single operation it repeats. */
const SQS_BATCHES: Record<string, string> = {
  SendMessageBatch: 'SendMessage',
  DeleteMessageBatch: 'DeleteMessage',
  ChangeMessageVisibilityBatch: 'ChangeMessageVisibility',
};

function sqs(batchOrSingle: string, input: JsonObject, lookup: ResourceLookup): Authorization[] {
  const operation = SQS_BATCHES[batchOrSingle] ?? batchOrSingle;
  if (input.QueueUrl !== undefined) {
    return [{ action: `sqs:${operation}`, resource: lookup.queueArn(String(input.QueueUrl)), context: {} }];
  }
  if (input.QueueName !== undefined) {
    const resource = `arn:aws:sqs:${lookup.region}:${lookup.accountId}:${String(input.QueueName)}`;
    return [{ action: `sqs:${operation}`, resource, context: {} }];
  }
  return [anything('sqs', operation)];
}

// ---- ECS -----------------------------------------------------------------------------------

function ecs(operation: string, input: JsonObject, lookup: ResourceLookup): Authorization[] {
  const prefix = `arn:aws:ecs:${lookup.region}:${lookup.accountId}`;
  const clusterName = String(input.cluster ?? 'default').replace(/^arn:aws:ecs:[^:]*:[^:]*:cluster\//, '');
  const clusterArn = `${prefix}:cluster/${clusterName}`;
  const inCluster = { 'ecs:cluster': clusterArn };
  const taskArn = (task: unknown) =>
    String(task).startsWith('arn:') ? String(task) : `${prefix}:task/${clusterName}/${String(task)}`;
  const passRole = (role: unknown): Authorization[] =>
    role === undefined
      ? []
      : [
          {
            action: 'iam:PassRole',
            resource: String(role),
            context: { 'iam:PassedToService': 'ecs-tasks.amazonaws.com' },
          },
        ];
  switch (operation) {
    case 'RegisterTaskDefinition':
      return [
        { action: 'ecs:RegisterTaskDefinition', resource: '*', context: {} },
        ...passRole(input.taskRoleArn),
        ...passRole(input.executionRoleArn),
      ];
    case 'RunTask': {
      const definition = String(input.taskDefinition);
      const resource = definition.startsWith('arn:') ? definition : `${prefix}:task-definition/${definition}`;
      const overrides = (input.overrides as JsonObject | undefined) ?? {};
      const tags = (input.tags as unknown[] | undefined) ?? [];
      return [
        { action: 'ecs:RunTask', resource, context: inCluster },
        ...passRole(overrides.taskRoleArn),
        ...passRole(overrides.executionRoleArn),
        ...(tags.length > 0
          ? [
              {
                action: 'ecs:TagResource',
                resource: `${prefix}:task/${clusterName}/*`,
                context: { 'ecs:CreateAction': 'RunTask' },
              },
            ]
          : []),
      ];
    }
    case 'StopTask':
      return [{ action: 'ecs:StopTask', resource: taskArn(input.task), context: inCluster }];
    case 'DescribeTasks':
      return ((input.tasks as unknown[] | undefined) ?? []).map((task) => ({
        action: 'ecs:DescribeTasks',
        resource: taskArn(task),
        context: inCluster,
      }));
    case 'ListTasks':
      return [{ action: 'ecs:ListTasks', resource: '*', context: inCluster }];
    default:
      return [anything('ecs', operation)];
  }
}

// ---- EventBridge ---------------------------------------------------------------------------

function events(operation: string, input: JsonObject, lookup: ResourceLookup): Authorization[] {
  if (operation !== 'PutEvents') return [anything('events', operation)];
  const buses = new Set(
    ((input.Entries as JsonObject[] | undefined) ?? []).map((entry) =>
      String(entry.EventBusName ?? 'default'),
    ),
  );
  return [...buses].map((bus) => ({
    action: 'events:PutEvents',
    resource: bus.startsWith('arn:')
      ? bus
      : `arn:aws:events:${lookup.region}:${lookup.accountId}:event-bus/${bus}`,
    context: {},
  }));
}

// ---- S3 (path-style addressing) --------------------------------------------------------------

function s3(request: SignedRequest): { operation: string; authorizations: Authorization[] } {
  const [path, rawQuery] = splitOnce(request.url, '?');
  const query = new URLSearchParams(rawQuery);
  const [, bucketPart = '', ...keyParts] = path.split('/');
  const bucket = decodeURIComponent(bucketPart);
  const key = keyParts.map(decodeURIComponent).join('/');
  const bucketArn = `arn:aws:s3:::${bucket}`;
  const objectArn = `${bucketArn}/${key}`;
  const on = (action: string, resource: string, context: Record<string, string> = {}): Authorization => ({
    action: `s3:${action}`,
    resource,
    context: { ...TRANSPORT, ...context },
  });
  const method = request.method.toUpperCase();
  if (bucket === '') return { operation: 'ListBuckets', authorizations: [on('ListAllMyBuckets', '*')] };

  if (keyParts.length === 0 || key === '') {
    if (method === 'GET' && (query.has('list-type') || rawQuery === '' || query.has('prefix'))) {
      return {
        operation: query.get('list-type') === '2' ? 'ListObjectsV2' : 'ListObjects',
        authorizations: [
          on('ListBucket', bucketArn, {
            's3:prefix': query.get('prefix') ?? '',
            ...(query.has('delimiter') ? { 's3:delimiter': query.get('delimiter') ?? '' } : {}),
          }),
        ],
      };
    }
    if (method === 'POST' && query.has('delete')) {
      const keys = [...request.body.toString('utf8').matchAll(/<Key>([\s\S]*?)<\/Key>/g)].map((m) =>
        unescapeXml(m[1] ?? ''),
      );
      return {
        operation: 'DeleteObjects',
        authorizations: keys.map((k) => on('DeleteObject', `${bucketArn}/${k}`)),
      };
    }
    if (method === 'HEAD') return { operation: 'HeadBucket', authorizations: [on('ListBucket', bucketArn)] };
    if (method === 'PUT' && query.has('policy')) {
      return { operation: 'PutBucketPolicy', authorizations: [on('PutBucketPolicy', bucketArn)] };
    }
    if (method === 'PUT' && rawQuery === '') {
      return { operation: 'CreateBucket', authorizations: [on('CreateBucket', bucketArn)] };
    }
    const sub = [...query.keys()][0] ?? '';
    return {
      operation: `${method} bucket ?${sub}`,
      authorizations: [on(`${method}Bucket${sub}`, bucketArn)],
    };
  }

  if (method === 'GET' || method === 'HEAD') {
    return {
      operation: method === 'GET' ? 'GetObject' : 'HeadObject',
      authorizations: [on(query.has('versionId') ? 'GetObjectVersion' : 'GetObject', objectArn)],
    };
  }
  if (method === 'PUT') {
    const copySource = request.headers['x-amz-copy-source'];
    const part = query.has('uploadId');
    const writes = [on('PutObject', objectArn)];
    if (request.headers['x-amz-tagging'] !== undefined) writes.push(on('PutObjectTagging', objectArn));
    if (copySource !== undefined) {
      const source = decodeURIComponent(copySource.split('?')[0] ?? '').replace(/^\//, '');
      return {
        operation: part ? 'UploadPartCopy' : 'CopyObject',
        authorizations: [on('GetObject', `arn:aws:s3:::${source}`), ...writes],
      };
    }
    return { operation: part ? 'UploadPart' : 'PutObject', authorizations: writes };
  }
  if (method === 'POST') {
    if (query.has('uploads'))
      return { operation: 'CreateMultipartUpload', authorizations: [on('PutObject', objectArn)] };
    if (query.has('uploadId')) {
      return { operation: 'CompleteMultipartUpload', authorizations: [on('PutObject', objectArn)] };
    }
  }
  if (method === 'DELETE') {
    if (query.has('uploadId')) {
      return { operation: 'AbortMultipartUpload', authorizations: [on('AbortMultipartUpload', objectArn)] };
    }
    return { operation: 'DeleteObject', authorizations: [on('DeleteObject', objectArn)] };
  }
  return { operation: `${method} object`, authorizations: [on(`${method}Object`, objectArn)] };
}

function unescapeXml(text: string): string {
  return text
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)))
    .replace(/&amp;/g, '&');
}

function splitOnce(text: string, separator: string): [string, string] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, ''] : [text.slice(0, at), text.slice(at + 1)];
}
