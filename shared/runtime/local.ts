// The embedded local executor: the same four handlers a Lambda deployment runs, wired to
// local adapters. An HTTP server turns requests into API Gateway v2 events, a loop feeds
// queue batches to the dispatcher, backend events go to task-events, and the sweeper runs
// on a timer. This is the one place the local dependencies are built.
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { S3Client } from '@aws-sdk/client-s3';
import type { Context, SQSEvent } from 'aws-lambda';
import Docker from 'dockerode';
import { createApiHandler, MAX_BODY_BYTES } from '../../functions/api.ts';
import { createDispatcherHandler } from '../../functions/dispatcher.ts';
import { createSweeperHandler } from '../../functions/sweeper.ts';
import { createTaskEventsHandler } from '../../functions/task-events.ts';
import { SdkS3Source } from '../adapters/aws/s3-source.ts';
import { loadSecret, serverIdentity } from '../adapters/local/data-dir.ts';
import { LocalDatabase } from '../adapters/local/database.ts';
import { DirectoryObjectStore } from '../adapters/local/dir-object-store.ts';
import { DockerBackend, type DockerCapture } from '../adapters/local/docker-backend.ts';
import { LocalJobData } from '../adapters/local/job-data.ts';
import { MemoryCapacityLedger } from '../adapters/local/memory-ledger.ts';
import { ProcessBackend } from '../adapters/local/process-backend.ts';
import { pruneEnded } from '../adapters/local/retention.ts';
import { SqliteNodeHistory } from '../adapters/local/sqlite-history.ts';
import { SqliteJobIntake } from '../adapters/local/sqlite-intake.ts';
import { SqliteJobQueue } from '../adapters/local/sqlite-queue.ts';
import { SqliteExecutionStore, SqliteIdempotencyStore } from '../adapters/local/sqlite-store.ts';
import { ferryWrapper, SHARED_WRAPPER_DIR } from '../adapters/local/wrapper-binary.ts';
import { executionIds, systemClock } from '../adapters/system.ts';
import type { FerryConfig } from '../config.ts';
import type { Core } from '../core.ts';
import type { PlatformProfile } from '../domain/bidding.ts';
import { parseImageReference, registryAllowed } from '../domain/image-reference.ts';
import { JOB_LIMITS } from '../domain/job-spec.ts';
import { ACTIVE_STATES } from '../domain/states.ts';
import type { TaskStateChangeEvent } from '../domain/task-event.ts';
import { UPLOAD_LINK_SECONDS } from '../domain/upload-links.ts';
import { HeadersTooLarge, StartupError, ValidationError } from '../errors.ts';
import { apiGatewayEvent } from '../http/api-gateway-event.ts';
import { DashboardAssets } from '../http/dashboard.ts';
import {
  bearerTokenOf,
  checkBearer,
  checkHost,
  checkOrigin,
  type RequestRules,
  readBodyOrRefuse,
  requestRules,
  requestTarget,
  sendProblem,
} from '../http/guards.ts';
import { problemOf, problemResponse } from '../http/problem.ts';
import { createLogger, type Logger } from '../logger.ts';
import type { ComputeBackend } from '../ports.ts';
import { InputSources } from '../staging/inputs.ts';
import { messageFor } from '../use-cases/dispatch.ts';
import { moveTo, mutate } from '../use-cases/transitions.ts';
import { demandOf, listAll } from '../use-cases/usage.ts';
import { FERRY_VERSION } from '../version.ts';

export interface LocalServer {
  readonly url: string;
  readonly core: Core;
  readonly backend: ComputeBackend;
  readonly queue: SqliteJobQueue;
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

/**
 * How the Docker backend will capture output: through ferry-wrapper, built on first use, unless
 * another way is asked for. Without a wrapper (no C compiler) it falls back to the engine's
 * journal and says what that costs, unless the wrapper was asked for by name.
 */
async function dockerCapture(config: FerryConfig, log: Logger): Promise<DockerCapture> {
  const spoolRoot = path.join(config.dataDir, 'spool');
  if (config.dockerCapture === 'journal' || config.dockerCapture === 'attach') {
    return { kind: config.dockerCapture, spoolRoot };
  }
  const wrapper = await ferryWrapper([SHARED_WRAPPER_DIR, path.join(config.dataDir, 'bin')]);
  if ('path' in wrapper) return { kind: 'wrapper', wrapperPath: wrapper.path, spoolRoot };
  if (config.dockerCapture === 'wrapper')
    throw new Error(`FERRY_DOCKER_CAPTURE=wrapper, but ${wrapper.unavailable}`);
  log.warn(
    `${wrapper.unavailable}. Output is captured through the Docker Engine's log driver instead, ` +
      'which slows jobs that print many short lines; install a C compiler with a static C library ' +
      '(Debian: gcc and libc6-dev) for full speed.',
  );
  return { kind: 'journal', spoolRoot };
}

export async function startLocalServer(
  config: FerryConfig,
  options: LocalServerOptions = {},
): Promise<LocalServer> {
  const log = options.log ?? createLogger(config.logLevel);
  // What can fail for a reason the user must fix is checked before anything is touched:
  // a server that cannot write its data or take its port adopts no container and runs no job.
  await prepareDataDir(config.dataDir);
  const door = await listen(config, log);
  try {
    return await startServing(config, options, log, door);
  } catch (error) {
    door.fail(error);
    await door.close();
    throw error;
  }
}

async function startServing(
  config: FerryConfig,
  options: LocalServerOptions,
  log: Logger,
  door: FrontDoor,
): Promise<LocalServer> {
  // One database holds the records, the idempotency keys and the queue; opening it takes the
  // data directory for this server alone.
  const database = LocalDatabase.open(config.dataDir);
  try {
    return await startWork(config, options, log, door, database);
  } catch (error) {
    // Give the data directory back at once, so a corrected start in this process can take it.
    database.close();
    throw error;
  }
}

async function startWork(
  config: FerryConfig,
  options: LocalServerOptions,
  log: Logger,
  door: FrontDoor,
  database: LocalDatabase,
): Promise<LocalServer> {
  const store = new SqliteExecutionStore(database, await loadSecret(path.join(config.dataDir, 'cursor.key')));
  const idempotency = new SqliteIdempotencyStore(database);
  const objects = await DirectoryObjectStore.open(config.dataDir, () => door.url);
  const queue = new SqliteJobQueue(database, {
    visibilitySeconds: config.queue.visibilitySeconds,
    maxReceives: config.queue.maxReceives,
  });

  // Events from the backend are applied one at a time, in the order they happened.
  let onTaskEvent: (event: TaskStateChangeEvent) => Promise<unknown> = async () => undefined;
  const taskEvents = serialWorker<TaskStateChangeEvent>(log, (event) => onTaskEvent(event));
  const emit = (event: TaskStateChangeEvent) => taskEvents.push(event);

  const chosen = await chooseBackend(config, options, log);
  // Inputs from S3 through the SDK's usual credentials and endpoint settings, from https, or
  // from this machine's files in the directories FERRY_INPUT_ALLOW names with file://.
  const inputs = new InputSources({
    s3: new SdkS3Source(
      new S3Client({
        region: process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
        forcePathStyle: config.s3ForcePathStyle,
        followRegionRedirects: true,
      }),
    ),
    // Never Ferry's own files (its database, its signing keys), even inside an allowed directory.
    fileExcluded: [config.dataDir],
    fileRoots: directoriesOf(config.policy.inputAllow),
  });
  // Outputs with a url are delivered into the directories FERRY_OUTPUT_ALLOW names with file://,
  // never into Ferry's own.
  const delivery = {
    roots: directoriesOf(config.policy.outputAllow),
    excluded: [config.dataDir],
  };
  const backend =
    chosen.platform === 'docker' && chosen.docker !== undefined
      ? new DockerBackend(
          chosen.docker,
          await serverIdentity(config.dataDir),
          objects,
          emit,
          log,
          await dockerCapture(config, log),
          (image) => {
            const { registry } = parseImageReference(image);
            return registryAllowed(registry, config.policy.registryAllow)
              ? undefined
              : `registry ${registry} is not allowed by FERRY_REGISTRY_ALLOW`;
          },
          new LocalJobData(path.join(config.dataDir, 'work'), 'mounts', inputs, delivery),
        )
      : new ProcessBackend(
          objects,
          emit,
          log,
          path.join(config.dataDir, 'work'),
          { PATH: config.processPath },
          path.join(config.dataDir, 'processes'),
          inputs,
          delivery,
        );

  // In memory: this server alone holds the data directory, so the map is the whole truth,
  // and `recover` rebuilds it from the store's active executions at start.
  const ledger = new MemoryCapacityLedger();
  const profile: PlatformProfile = {
    platform: backend.platform,
    maxCpu: config.capacity.maxCpu,
    maxMemoryMiB: config.capacity.maxMemoryMiB,
    supportsGpu: false,
    supportsInputs: true,
    supportsOutputs: true,
    supportsPublish: true,
    maxSteps: JOB_LIMITS.steps,
    supportsVolumes: true,
    deliversOutputs: true,
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
    history: new SqliteNodeHistory(database),
    queue,
    intake: new SqliteJobIntake(database, store, queue),
    objects,
    backend,
    inputs,
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
      // Local backends store results themselves: no upload link is ever signed here.
      uploadLinkSeconds: UPLOAD_LINK_SECONDS,
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
  let closed = false;
  onTaskEvent = async (event) => {
    // Jobs killed as the server closes report it after the database is shut: the next start
    // finds them in its recovery and ends them saying why.
    if (closed) return undefined;
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
  let prunedAt = 0;
  const sweepTimer = setInterval(() => {
    if (sweeping) return;
    sweeping = true;
    sweeper({}, lambdaContext('sweeper'))
      .then(async () => {
        // Retention, once a minute: ended executions older than FERRY_RETENTION_DAYS go.
        if (Date.now() - prunedAt < 60_000) return;
        prunedAt = Date.now();
        const cutoff = new Date(Date.now() - config.retentionDays * 86_400_000);
        const pruned = await pruneEnded(store, objects, ledger, cutoff, log);
        if (pruned > 0)
          log.info('deleted executions past their retention', {
            pruned,
            retentionDays: config.retentionDays,
          });
      })
      .catch((error) => log.error('sweep failed', { error }))
      .finally(() => {
        sweeping = false;
      });
  }, config.sweepIntervalSeconds * 1000);

  door.serve({ api, objects });
  log.info('ferry is listening', {
    url: door.url,
    backend: backend.platform,
    dataDir: config.dataDir,
    maxConcurrency: config.capacity.maxConcurrency,
  });

  return {
    url: door.url,
    core,
    backend,
    queue,
    async close() {
      running = false;
      clearInterval(sweepTimer);
      await door.close();
      await dispatchLoop;
      await taskEvents.drain();
      closed = true;
      if (backend instanceof ProcessBackend) await backend.shutdown();
      // A report already being handled when the flag was set finishes before the database shuts.
      await taskEvents.drain();
      database.close();
    },
  };
}

/**
 * After a restart: queued work whose message was lost (a crash between the write and the
 * send) is queued again, Docker containers are adopted, job processes left by the earlier
 * server are killed and their executions FAILED, and whatever is still unaccounted for is
 * left to the sweeper, which finds lost tasks. An execution whose message survived in the
 * queue gets no second one: a copy would not run the job twice (the state check drops it once
 * the job launched), but both carry the same token, so while the job waits for capacity each
 * deferral would re-send both and two chains would travel until launch.
 */
async function recover(
  core: Core,
  backend: ComputeBackend,
  queue: SqliteJobQueue,
  log: Logger,
): Promise<void> {
  const queued = await listAll(core, ['QUEUED']);
  const active = await listAll(core, ACTIVE_STATES);
  let requeued = 0;
  const resend = async (execution: (typeof queued)[number]) => {
    if (queue.holdsMessageFor(execution.id)) return;
    await queue.send(messageFor(execution));
    requeued++;
  };
  for (const execution of queued) await resend(execution);
  const unbounded = {
    maxConcurrency: Number.POSITIVE_INFINITY,
    maxCpu: Number.POSITIVE_INFINITY,
    maxMemoryMiB: Number.POSITIVE_INFINITY,
  };
  for (const execution of active) await core.ledger.reserve(execution.id, demandOf(execution), unbounded);
  let abandoned = 0;
  for (const execution of active) {
    if (execution.task !== undefined) continue;
    // A process launch that got as far as the job's directory may have started the job, and
    // a process cannot be adopted: launching it again could run it twice, so it ends here.
    const mayHaveStarted =
      backend instanceof ProcessBackend &&
      execution.state === 'LAUNCHING' &&
      backend.mayHaveStarted(execution);
    if (!mayHaveStarted) {
      await resend(execution);
      continue;
    }
    const reason =
      'the server stopped while launching the job; it may have started, so it is not started again';
    await mutate(core.store, execution.id, (current) =>
      current.state === 'LAUNCHING' && current.task === undefined
        ? moveTo(current, 'FAILED', core.clock.now(), { endedAt: core.clock.now().toISOString() }, reason)
        : undefined,
    );
    abandoned++;
  }
  let adopted = 0;
  let killedProcessGroups = 0;
  if (backend instanceof DockerBackend) {
    ({ adopted } = await backend.recover(new Map(active.map((e) => [e.id, e]))));
  }
  if (backend instanceof ProcessBackend) {
    ({ killed: killedProcessGroups } = await backend.recover(new Map(active.map((e) => [e.id, e]))));
  }
  if (queued.length + active.length + killedProcessGroups > 0) {
    log.info('recovered after restart', {
      requeued,
      active: active.length,
      abandonedLaunches: abandoned,
      adoptedContainers: adopted,
      killedProcessGroups,
    });
  }
}

/**
 * Makes the data directory and proves it writable. Node's recursive mkdir never returns for a
 * path under /proc, so the directory is made one level at a time.
 */
async function prepareDataDir(dir: string): Promise<void> {
  const makeDirectory = async (target: string): Promise<void> => {
    try {
      await fsp.mkdir(target);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return;
      if (code !== 'ENOENT' || path.dirname(target) === target) throw error;
      await makeDirectory(path.dirname(target));
      await fsp.mkdir(target);
    }
  };
  try {
    await makeDirectory(dir);
    const probe = path.join(dir, `.write-probe-${process.pid}-${randomUUID()}`);
    await fsp.writeFile(probe, 'ferry');
    await fsp.rm(probe);
  } catch (error) {
    throw new StartupError(
      `cannot write the data directory ${dir} (${reasonOf(error)}); set FERRY_DATA_DIR to a writable directory`,
      { cause: error },
    );
  }
}

const reasonOf = (error: unknown): string =>
  (error as NodeJS.ErrnoException).code ?? (error as Error).message ?? String(error);

/** What requests need once the core is up. */
interface Serving {
  readonly api: ReturnType<typeof createApiHandler>;
  readonly objects: DirectoryObjectStore;
}

/** The HTTP server, bound before the core starts: requests that come early wait for it. */
interface FrontDoor {
  readonly url: string;
  serve(serving: Serving): void;
  /** Start-up failed: requests still waiting get a 503. */
  fail(error: unknown): void;
  close(): Promise<void>;
}

/** Takes the port, or fails with what to change; the server is reachable at once but answers when served. */
async function listen(config: FerryConfig, log: Logger): Promise<FrontDoor> {
  let serve: (serving: Serving) => void = () => undefined;
  let fail: (error: unknown) => void = () => undefined;
  const ready = new Promise<Serving>((resolve, reject) => {
    serve = resolve;
    fail = reject;
  });
  ready.catch(() => undefined);
  // Set as soon as the port is known, before the first request can be read.
  let rules: RequestRules = { origins: new Set() };
  const dashboard = DashboardAssets.load();
  const server = http.createServer((request, response) => {
    requestScope.run({ response, log }, () => {
      void serveHttp(request, response, { config, log, ready, rules, dashboard });
    });
  });
  server.keepAliveTimeout = 65_000;
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => answerMalformed(error, socket));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => reject(listenFailure(error, config)));
    server.listen(config.port, config.host, () => resolve());
  });
  server.on('error', (error) => log.error('the HTTP server failed', { error }));
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  rules = requestRules(config.host, port, {
    origins: config.allowedOrigins,
    setting: 'FERRY_ALLOWED_ORIGINS',
  });
  return {
    url: `http://${host}:${port}`,
    serve,
    fail,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function listenFailure(error: NodeJS.ErrnoException, config: FerryConfig): StartupError {
  const where = `port ${config.port} on ${config.host}`;
  switch (error.code) {
    case 'EADDRINUSE':
      return new StartupError(`${where} is in use; set FERRY_PORT to a free port`, { cause: error });
    case 'EACCES':
      return new StartupError(
        `${where} needs privileges this process lacks; set FERRY_PORT to a port above 1023`,
        {
          cause: error,
        },
      );
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new StartupError(
        `cannot listen on ${config.host} (${error.code}); set FERRY_HOST to an address of this machine`,
        { cause: error },
      );
    default:
      return new StartupError(
        `cannot listen on ${where} (${reasonOf(error)}); set FERRY_HOST and FERRY_PORT`,
        {
          cause: error,
        },
      );
  }
}

/** Requests Node's parser refuses never reach a handler; they still get a problem document. */
function answerMalformed(error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const refusal =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? new HeadersTooLarge('the request line and headers are too long')
      : new ValidationError(`the request is not valid HTTP (${error.code ?? 'parse error'})`);
  const reply = problemResponse(problemOf(refusal));
  const body = Buffer.from(reply.body ?? '');
  socket.end(
    `HTTP/1.1 ${reply.statusCode} ${problemOf(refusal).title}\r\n` +
      `content-type: application/problem+json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** The request a piece of code runs for, so a fault escaping it can be pinned on that request. */
const requestScope = new AsyncLocalStorage<{
  readonly response: http.ServerResponse;
  readonly log: Logger;
}>();

/**
 * For the process that runs the server, on an uncaught exception or unhandled rejection: if it
 * escaped from serving a request, logs it, ends that request and returns true (the server goes
 * on); otherwise returns false: it is a real crash.
 */
export function containRequestFault(error: unknown): boolean {
  const scope = requestScope.getStore();
  if (scope === undefined) return false;
  scope.log.error('a request failed outside its error handling', { error });
  if (scope.response.headersSent) scope.response.destroy();
  else if (!scope.response.writableEnded) sendProblem(scope.response, error);
  return true;
}

interface HttpDeps {
  readonly config: FerryConfig;
  readonly log: Logger;
  readonly dashboard: DashboardAssets;
  readonly ready: Promise<Serving>;
  readonly rules: RequestRules;
}

/**
 * The caller's identity: a bearer token stands for one caller; none means the local user.
 */
function ownerOf(request: http.IncomingMessage, config: FerryConfig): string {
  const token = bearerTokenOf(request.headers.authorization);
  if (config.token !== undefined) checkBearer(token, config.token, 'FERRY_TOKEN');
  if (token === undefined) return 'local:user/default';
  return `local:token/${createHash('sha256').update(token).digest('hex').slice(0, 16)}`;
}

async function serveHttp(request: http.IncomingMessage, response: http.ServerResponse, deps: HttpDeps) {
  let path = request.url ?? '';
  try {
    const url = requestTarget(request.url ?? '');
    path = url.pathname;
    checkHost(request, deps.rules);
    // The pages hold no one's data: they ask the API for it with the caller's token.
    if (deps.dashboard.answer(request, response, url.pathname)) return;
    const serving = await deps.ready.catch((error) => {
      throw new StartupError('the server failed to start', { cause: error });
    });
    if (request.method === 'GET' && url.pathname.startsWith('/objects/')) {
      // Download links are signed, and meant to be followed from anywhere.
      serveObject(url, response, serving.objects);
      return;
    }
    if (request.method === 'GET' && url.pathname === '/healthz') {
      response.writeHead(200, { 'content-type': 'text/plain' });
      response.end('ok\n');
      return;
    }
    checkOrigin(request, deps.rules);
    const owner = ownerOf(request, deps.config);
    const body = await readBodyOrRefuse(request, response, MAX_BODY_BYTES);
    if (body === undefined) return;
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
    const reply = await serving.api(event, lambdaContext('api'));
    const replyBody = reply.body === undefined ? '' : reply.body;
    const bytes = reply.isBase64Encoded ? Buffer.from(replyBody, 'base64') : Buffer.from(replyBody, 'utf8');
    response.writeHead(reply.statusCode ?? 200, {
      ...(reply.headers as Record<string, string>),
      'content-length': bytes.length,
    });
    response.end(bytes);
  } catch (error) {
    if (problemOf(error).status >= 500) deps.log.error('request failed', { error, path });
    if (!response.headersSent) sendProblem(response, error);
    else response.destroy();
  }
}

function serveObject(url: URL, response: http.ServerResponse, objects: DirectoryObjectStore): void {
  // requestTarget has checked the percent-encoding.
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

/** The directories of this machine that `file://` prefixes (of FERRY_INPUT_ALLOW, FERRY_OUTPUT_ALLOW) name. */
function directoriesOf(prefixes: readonly string[]): string[] {
  return prefixes.flatMap((entry) =>
    entry.startsWith('file://') ? [decodeURIComponent(new URL(entry).pathname)] : [],
  );
}
