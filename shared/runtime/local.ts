// The embedded local executor: the same four handlers a Lambda deployment runs, wired to
// local adapters. An HTTP server turns requests into API Gateway v2 events, a loop feeds
// queue batches to the dispatcher, backend events go to task-events, and the sweeper runs
// on a timer. This is the one place the local dependencies are built.
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Context, SQSEvent } from 'aws-lambda';
import Docker from 'dockerode';
import { createApiHandler, MAX_BODY_BYTES } from '../../functions/api.ts';
import { createDispatcherHandler } from '../../functions/dispatcher.ts';
import { createSweeperHandler } from '../../functions/sweeper.ts';
import { createTaskEventsHandler } from '../../functions/task-events.ts';
import { serverIdentity } from '../adapters/local/data-dir.ts';
import { DirectoryObjectStore } from '../adapters/local/dir-object-store.ts';
import { DockerBackend } from '../adapters/local/docker-backend.ts';
import { FileExecutionStore, FileIdempotencyStore } from '../adapters/local/file-store.ts';
import { LocalQueue } from '../adapters/local/local-queue.ts';
import { MemoryCapacityLedger } from '../adapters/local/memory-ledger.ts';
import { ProcessBackend } from '../adapters/local/process-backend.ts';
import { executionIds, systemClock } from '../adapters/system.ts';
import type { FerryConfig } from '../config.ts';
import type { Core } from '../core.ts';
import type { PlatformProfile } from '../domain/bidding.ts';
import { parseImageReference, registryAllowed } from '../domain/image-reference.ts';
import { ACTIVE_STATES } from '../domain/states.ts';
import type { TaskStateChangeEvent } from '../domain/task-event.ts';
import { PayloadTooLarge, Unauthorized } from '../errors.ts';
import { apiGatewayEvent } from '../http/api-gateway-event.ts';
import { problemOf, problemResponse } from '../http/problem.ts';
import { createLogger, type Logger } from '../logger.ts';
import type { ComputeBackend } from '../ports.ts';
import { messageFor } from '../use-cases/dispatch.ts';
import { demandOf, listAll } from '../use-cases/usage.ts';
import { FERRY_VERSION } from '../version.ts';

export interface LocalServer {
  readonly url: string;
  readonly core: Core;
  readonly backend: ComputeBackend;
  readonly queue: LocalQueue;
  /** Stops taking work and closes files. Docker containers keep running; processes are killed. */
  close(): Promise<void>;
}

export interface LocalServerOptions {
  readonly log?: Logger;
  /** Test seam: a Docker client other than the default socket. */
  readonly docker?: Docker;
}

function lambdaContext(name: string): Context {
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName: `ferry-local-${name}`,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:ferry-local-${name}`,
    memoryLimitInMB: '1024',
    awsRequestId: randomUUID(),
    logGroupName: `/ferry/local/${name}`,
    logStreamName: 'local',
    // Local requests have no Lambda deadline; long waits are bounded by maxWaitSeconds.
    getRemainingTimeInMillis: () => 15 * 60 * 1000,
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}

/** Runs async work one item at a time, in order; errors are logged, never lost silently. */
function serialWorker<T>(log: Logger, work: (item: T) => Promise<unknown>) {
  let chain = Promise.resolve();
  return {
    push(item: T) {
      chain = chain
        .then(() => work(item))
        .then(
          () => undefined,
          (error) => log.error('background work failed', { error }),
        );
    },
    drain: () => chain,
  };
}

async function chooseBackend(
  config: FerryConfig,
  options: LocalServerOptions,
  log: Logger,
): Promise<{ docker?: Docker; platform: 'docker' | 'process' }> {
  if (config.backend === 'process') {
    log.warn(
      'process backend: jobs run as plain processes on this machine, WITHOUT isolation ' +
        '(the image is ignored; cpu, memory, disk and network are not limited).',
    );
    return { platform: 'process' };
  }
  const docker =
    options.docker ??
    new Docker(config.dockerSocket === undefined ? {} : { socketPath: config.dockerSocket });
  if (await DockerBackend.reachable(docker)) return { docker, platform: 'docker' };
  if (config.backend === 'docker') {
    throw new Error(
      `FERRY_BACKEND=docker but no Docker Engine answers at ${config.dockerSocket ?? '/var/run/docker.sock'}`,
    );
  }
  log.warn(
    'no Docker Engine is reachable: jobs will run as plain processes on this machine, WITHOUT isolation ' +
      '(no image, no cpu/memory/network limits). Start Docker or set FERRY_BACKEND=docker to require it.',
  );
  return { platform: 'process' };
}

export async function startLocalServer(
  config: FerryConfig,
  options: LocalServerOptions = {},
): Promise<LocalServer> {
  const log = options.log ?? createLogger(config.logLevel);
  await fsp.mkdir(config.dataDir, { recursive: true });
  const store = await FileExecutionStore.open(config.dataDir);
  const idempotency = await FileIdempotencyStore.open(config.dataDir);
  let baseUrl = '';
  const objects = await DirectoryObjectStore.open(config.dataDir, () => baseUrl);
  const queue = new LocalQueue({
    visibilitySeconds: config.queue.visibilitySeconds,
    maxReceives: config.queue.maxReceives,
  });

  // Events from the backend are applied one at a time, in the order they happened.
  let onTaskEvent: (event: TaskStateChangeEvent) => Promise<unknown> = async () => undefined;
  const taskEvents = serialWorker<TaskStateChangeEvent>(log, (event) => onTaskEvent(event));
  const emit = (event: TaskStateChangeEvent) => taskEvents.push(event);

  const chosen = await chooseBackend(config, options, log);
  const backend =
    chosen.platform === 'docker' && chosen.docker !== undefined
      ? new DockerBackend(
          chosen.docker,
          await serverIdentity(config.dataDir),
          objects,
          emit,
          log,
          config.dockerOutputJournal,
          (image) => {
            const { registry } = parseImageReference(image);
            return registryAllowed(registry, config.policy.registryAllow)
              ? undefined
              : `registry ${registry} is not allowed by FERRY_REGISTRY_ALLOW`;
          },
        )
      : new ProcessBackend(objects, emit, log, path.join(config.dataDir, 'work'), {
          PATH: config.processPath,
        });

  const ledger = new MemoryCapacityLedger();
  const profile: PlatformProfile = {
    platform: backend.platform,
    maxCpu: config.capacity.maxCpu,
    maxMemoryMiB: config.capacity.maxMemoryMiB,
    supportsGpu: false,
    supportsInputs: false,
    supportsOutputs: false,
    supportsPublish: true,
    // Docker gives a job no network at all; plain processes share the host's.
    enforcesNetworkNone: backend.platform === 'docker',
    // Images already on the host run whatever their name; the process backend runs no images.
    ...(backend instanceof DockerBackend
      ? { imagePresent: (image: string) => backend.imagePresent(image) }
      : {}),
  };
  const core: Core = {
    store,
    idempotency,
    queue,
    objects,
    backend,
    ledger,
    changes: store,
    clock: systemClock,
    ids: executionIds(),
    log,
    settings: {
      policy: config.policy,
      profile,
      capacity: config.capacity,
      bidTtlSeconds: config.policy.bidTtlSeconds,
      deferSeconds: 1,
      maxLaunchAttempts: 8,
      resultLinkSeconds: config.resultLinkSeconds,
      maxWaitSeconds: 300,
      launchGraceSeconds: 120,
      requeueAfterSeconds: 60,
      version: FERRY_VERSION,
    },
  };

  const api = createApiHandler(core);
  const dispatcher = createDispatcherHandler(core);
  const taskEventsHandler = createTaskEventsHandler(core);
  const sweeper = createSweeperHandler(core);
  onTaskEvent = async (event) => {
    const reply = await taskEventsHandler(event, lambdaContext('task-events'));
    // A stopped task frees a slot: the job deferred longest for want of one is looked at again
    // now, not after its delay. Local jobs can last milliseconds, and waiting out the delay
    // capped throughput at about max-concurrency jobs per deferSeconds.
    if (event.detail.lastStatus === 'STOPPED' && reply.outcome === 'applied') queue.releaseDelayed(1);
    return reply;
  };

  await recover(core, backend, queue, log);

  let running = true;
  const dispatchLoop = (async () => {
    while (running) {
      const messages = await queue.receive(10, 500);
      if (messages.length === 0) continue;
      const event: SQSEvent = {
        Records: messages.map((m) => ({
          messageId: m.messageId,
          receiptHandle: m.receiptHandle,
          body: m.body,
          attributes: {
            ApproximateReceiveCount: String(m.receiveCount),
            SentTimestamp: String(m.sentAt),
            SenderId: 'ferry-local',
            ApproximateFirstReceiveTimestamp: String(Date.now()),
          },
          messageAttributes: {},
          md5OfBody: createHash('md5').update(m.body).digest('hex'),
          eventSource: 'aws:sqs',
          eventSourceARN: 'arn:aws:sqs:local:000000000000:ferry-dispatch',
          awsRegion: 'local',
        })),
      };
      try {
        const result = await dispatcher(event, lambdaContext('dispatcher'));
        const failed = new Set(result.batchItemFailures.map((f) => f.itemIdentifier));
        for (const m of messages) if (!failed.has(m.messageId)) await queue.delete(m.receiptHandle);
      } catch (error) {
        log.error('dispatcher batch failed; messages will be delivered again', { error });
      }
    }
  })();

  let sweeping = false;
  const sweepTimer = setInterval(() => {
    if (sweeping) return;
    sweeping = true;
    sweeper({}, lambdaContext('sweeper'))
      .catch((error) => log.error('sweep failed', { error }))
      .finally(() => {
        sweeping = false;
      });
  }, config.sweepIntervalSeconds * 1000);

  const server = http.createServer((request, response) => {
    void serveHttp(request, response, { api, objects, config, log });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  baseUrl = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${address.port}`;
  log.info('ferry is listening', {
    url: baseUrl,
    backend: backend.platform,
    dataDir: config.dataDir,
    maxConcurrency: config.capacity.maxConcurrency,
  });

  return {
    url: baseUrl,
    core,
    backend,
    queue,
    async close() {
      running = false;
      clearInterval(sweepTimer);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await dispatchLoop;
      await taskEvents.drain();
      if (backend instanceof ProcessBackend) await backend.shutdown();
      await store.close();
      await idempotency.close();
    },
  };
}

/**
 * After a restart: queued work is queued again (the in-process queue was lost with the
 * process), Docker containers are adopted, and whatever is still unaccounted for is left
 * to the sweeper, which finds lost tasks.
 */
async function recover(core: Core, backend: ComputeBackend, queue: LocalQueue, log: Logger): Promise<void> {
  const queued = await listAll(core, ['QUEUED']);
  const active = await listAll(core, ACTIVE_STATES);
  for (const execution of queued) await queue.send(messageFor(execution));
  const unbounded = {
    maxConcurrency: Number.POSITIVE_INFINITY,
    maxCpu: Number.POSITIVE_INFINITY,
    maxMemoryMiB: Number.POSITIVE_INFINITY,
  };
  for (const execution of active) await core.ledger.reserve(execution.id, demandOf(execution), unbounded);
  for (const execution of active) {
    if (execution.task === undefined) await queue.send(messageFor(execution));
  }
  let adopted = 0;
  if (backend instanceof DockerBackend) {
    ({ adopted } = await backend.recover(new Map(active.map((e) => [e.id, e]))));
  }
  if (queued.length + active.length > 0) {
    log.info('recovered after restart', {
      requeued: queued.length,
      active: active.length,
      adoptedContainers: adopted,
    });
  }
}

interface HttpDeps {
  readonly api: ReturnType<typeof createApiHandler>;
  readonly objects: DirectoryObjectStore;
  readonly config: FerryConfig;
  readonly log: Logger;
}

function sendProblem(
  response: http.ServerResponse,
  error: unknown,
  extraHeaders: Record<string, string> = {},
): void {
  const reply = problemResponse(problemOf(error));
  response.writeHead(reply.statusCode ?? 500, {
    ...(reply.headers as Record<string, string>),
    ...extraHeaders,
  });
  response.end(reply.body);
}

/** The caller's identity: a bearer token stands for one caller; none means the local user. */
function ownerOf(request: http.IncomingMessage, config: FerryConfig): string {
  const header = request.headers.authorization;
  const token = header?.startsWith('Bearer ') ? header.slice('Bearer '.length).trim() : undefined;
  if (config.token !== undefined && token !== config.token) {
    throw new Unauthorized('a valid bearer token is required (Authorization: Bearer <FERRY_TOKEN>)');
  }
  if (token === undefined || token === '') return 'local:user/default';
  return `local:token/${createHash('sha256').update(token).digest('hex').slice(0, 16)}`;
}

async function readBody(request: http.IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(request.headers['content-length'] ?? '0');
  if (declared > limit)
    throw new PayloadTooLarge(`the body is ${declared} bytes; at most ${limit} bytes are accepted`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > limit)
      throw new PayloadTooLarge(`the body is over ${limit} bytes; at most ${limit} bytes are accepted`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function serveHttp(request: http.IncomingMessage, response: http.ServerResponse, deps: HttpDeps) {
  const url = new URL(request.url ?? '/', 'http://local');
  try {
    if (request.method === 'GET' && url.pathname.startsWith('/objects/')) {
      serveObject(url, response, deps.objects);
      return;
    }
    if (request.method === 'GET' && url.pathname === '/healthz') {
      response.writeHead(200, { 'content-type': 'text/plain' });
      response.end('ok\n');
      return;
    }
    const owner = ownerOf(request, deps.config);
    let body: Buffer;
    try {
      body = await readBody(request, MAX_BODY_BYTES);
    } catch (error) {
      // Stop reading what is left of an oversized body and close the connection.
      sendProblem(response, error, { connection: 'close' });
      request.destroy();
      return;
    }
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers)) {
      if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(',') : value;
    }
    const event = apiGatewayEvent({
      method: request.method ?? 'GET',
      path: url.pathname,
      query: url.search.slice(1),
      headers,
      body,
      caller: owner,
      sourceIp: request.socket.remoteAddress ?? '127.0.0.1',
      protocol: `HTTP/${request.httpVersion}`,
    });
    const reply = await deps.api(event, lambdaContext('api'));
    const replyBody = reply.body === undefined ? '' : reply.body;
    const bytes = reply.isBase64Encoded ? Buffer.from(replyBody, 'base64') : Buffer.from(replyBody, 'utf8');
    response.writeHead(reply.statusCode ?? 200, {
      ...(reply.headers as Record<string, string>),
      'content-length': bytes.length,
    });
    response.end(bytes);
  } catch (error) {
    if (problemOf(error).status >= 500) deps.log.error('request failed', { error, path: url.pathname });
    if (!response.headersSent) sendProblem(response, error);
    else response.destroy();
  }
}

function serveObject(url: URL, response: http.ServerResponse, objects: DirectoryObjectStore): void {
  const key = url.pathname
    .slice('/objects/'.length)
    .split('/')
    .map((part) => decodeURIComponent(part))
    .join('/');
  const file = objects.verifyLink(
    key,
    url.searchParams.get('expires') ?? undefined,
    url.searchParams.get('signature') ?? undefined,
  );
  if (file === undefined) {
    response.writeHead(403, { 'content-type': 'application/problem+json' });
    response.end(
      JSON.stringify({
        type: 'about:blank',
        title: 'Forbidden',
        status: 403,
        detail: 'the link is invalid or expired',
      }),
    );
    return;
  }
  const stream = fs.createReadStream(file);
  stream.once('open', () => {
    response.writeHead(200, { 'content-type': 'application/octet-stream' });
    stream.pipe(response);
  });
  stream.once('error', () => {
    if (response.headersSent) {
      response.destroy();
      return;
    }
    response.writeHead(404, { 'content-type': 'application/problem+json' });
    response.end(
      JSON.stringify({ type: 'about:blank', title: 'Not Found', status: 404, detail: 'the object is gone' }),
    );
  });
}
