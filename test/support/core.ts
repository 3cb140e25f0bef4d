// A Core on the local adapters with a backend under the test's control, for testing use
// cases without running anything: the test plays the part of the task and its events.

import { LocalDatabase } from '../../shared/adapters/local/database.ts';
import { DirectoryObjectStore } from '../../shared/adapters/local/dir-object-store.ts';
import { MemoryCapacityLedger } from '../../shared/adapters/local/memory-ledger.ts';
import { SqliteJobIntake } from '../../shared/adapters/local/sqlite-intake.ts';
import { SqliteJobQueue } from '../../shared/adapters/local/sqlite-queue.ts';
import { SqliteExecutionStore, SqliteIdempotencyStore } from '../../shared/adapters/local/sqlite-store.ts';
import { executionIds } from '../../shared/adapters/system.ts';
import type { Core } from '../../shared/core.ts';
import type { Execution, ResolvedConstraints } from '../../shared/domain/execution.ts';
import { DEFAULT_REGISTRIES } from '../../shared/domain/image-reference.ts';
import type { BackendError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { ComputeBackend, LaunchTicket, LiveRead, TaskStatus } from '../../shared/ports.ts';
import { tempDir } from './server.ts';

export class ScriptedBackend implements ComputeBackend {
  readonly platform = 'docker' as const;
  readonly launched: string[] = [];
  /** Every launch attempt's ticket, by execution, in order. */
  readonly tickets = new Map<string, LaunchTicket[]>();
  readonly stopped: string[] = [];
  readonly tasks = new Map<string, 'RUNNING' | 'STOPPED'>();
  /** How a STOPPED task ended, as `describe` reports it. */
  readonly stopDetails = new Map<string, Partial<TaskStatus>>();
  /** Errors the next launches throw, in order. */
  readonly failures: BackendError[] = [];
  /** Runs inside launch, before it returns: lets a test race something against the launch. */
  duringLaunch: (() => Promise<void>) | undefined;

  async launch(
    execution: Execution,
    _constraints: ResolvedConstraints,
    ticket: LaunchTicket,
  ): Promise<{ taskId: string }> {
    this.tickets.set(execution.id, [...(this.tickets.get(execution.id) ?? []), ticket]);
    const failure = this.failures.shift();
    if (failure !== undefined) throw failure;
    await this.duringLaunch?.();
    const taskId = `task/${execution.id}`;
    if (!this.tasks.has(taskId)) this.launched.push(taskId);
    this.tasks.set(taskId, 'RUNNING');
    return { taskId };
  }

  async stop(taskId: string): Promise<void> {
    this.stopped.push(taskId);
  }

  async describe(taskIds: readonly string[]): Promise<readonly TaskStatus[]> {
    return taskIds.map((taskId) => ({
      taskId,
      executionId: taskId.slice('task/'.length),
      lastStatus: this.tasks.get(taskId) ?? 'MISSING',
      ...(this.tasks.get(taskId) === 'STOPPED' ? this.stopDetails.get(taskId) : {}),
    }));
  }

  async readLive(): Promise<LiveRead | undefined> {
    return undefined;
  }
}

export interface TestCore {
  readonly core: Core;
  readonly backend: ScriptedBackend;
  readonly queue: SqliteJobQueue;
  readonly store: SqliteExecutionStore;
  readonly database: LocalDatabase;
  readonly now: { value: Date };
}

export async function buildTestCore(overrides: Partial<Core['settings']> = {}): Promise<TestCore> {
  const dir = await tempDir('ferry-core-');
  const database = LocalDatabase.open(dir);
  const store = new SqliteExecutionStore(database, Buffer.alloc(32, 7));
  const now = { value: new Date('2030-01-01T00:00:00.000Z') };
  const queue = new SqliteJobQueue(database, {
    visibilitySeconds: 30,
    maxReceives: 5,
    now: () => now.value.getTime(),
  });
  const backend = new ScriptedBackend();
  const core: Core = {
    store,
    idempotency: new SqliteIdempotencyStore(database, () => now.value.getTime()),
    queue,
    intake: new SqliteJobIntake(database, store, queue),
    objects: await DirectoryObjectStore.open(dir, () => 'http://127.0.0.1:1'),
    backend,
    ledger: new MemoryCapacityLedger(),
    changes: store,
    clock: { now: () => now.value },
    ids: executionIds(() => now.value.getTime()),
    log: silentLogger,
    settings: {
      policy: {
        imageAllow: ['*'],
        imageDeny: [],
        registryAllow: [...DEFAULT_REGISTRIES],
        publishAllow: ['*'],
        inputAllow: [],
        minTimeoutSeconds: 1,
        maxTimeoutSeconds: 86400,
        allowEgress: true,
        maxOutputBytes: 1024 * 1024,
      },
      profile: {
        platform: 'docker',
        maxCpu: 2,
        maxMemoryMiB: 4096,
        supportsGpu: false,
        supportsInputs: false,
        supportsOutputs: false,
        supportsPublish: true,
        maxSteps: 16,
        supportsVolumes: true,
        enforcesNetworkNone: true,
      },
      capacity: { maxConcurrency: 2, maxCpu: 2, maxMemoryMiB: 4096, starvationSeconds: 60 },
      bidTtlSeconds: 300,
      deferSeconds: 1,
      maxLaunchAttempts: 4,
      resultLinkSeconds: 60,
      uploadLinkSeconds: 300,
      maxWaitSeconds: 5,
      launchGraceSeconds: 120,
      requeueAfterSeconds: 60,
      version: 'test',
      ...overrides,
    },
  };
  return { core, backend, queue, store, database, now };
}
