// Emulated Lambda functions: each function's bundle runs in execution environments of its own
// (child node processes with the function's environment, started on demand and kept warm),
// one invocation at a time per environment, at most `maxConcurrency` at once, each cut off at
// the function's timeout and refused past Lambda's 6 MB response payload limit.
import { type ChildProcess, fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BOOTSTRAP = path.join(path.dirname(fileURLToPath(import.meta.url)), 'lambda-bootstrap.mjs');

/** Lambda refuses a synchronous response larger than this. */
export const MAX_RESPONSE_BYTES = 6 * 1024 * 1024;

export interface LambdaError {
  readonly errorType: string;
  readonly errorMessage: string;
  readonly stackTrace?: readonly string[];
}

export type InvokeOutcome =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly error: LambdaError };

export interface FunctionSettings {
  readonly name: string;
  readonly arn: string;
  /** The bundle file, and the export the handler names. */
  readonly entry: string;
  readonly exportName: string;
  readonly environment: Readonly<Record<string, string>>;
  readonly timeoutSeconds: number;
  readonly memoryMiB: number;
  /** Environments that may run at once (reserved concurrency, or an event source's maximum). */
  readonly maxConcurrency: number;
  /** Where each line the function writes goes. */
  readonly log: (functionName: string, line: string) => void;
  /** How far ahead of the host's clock the function's clock is, read at each invocation. */
  readonly clockOffsetMs: () => number;
}

interface Environment {
  readonly child: ChildProcess;
  busy: boolean;
}

interface Pending {
  readonly resolve: (outcome: InvokeOutcome) => void;
}

export class EmulatedFunction {
  private readonly environments: Environment[] = [];
  private readonly waiting: (() => void)[] = [];
  private starting = 0;
  private closed = false;
  invocations = 0;

  constructor(readonly settings: FunctionSettings) {}

  /** Runs one invocation; an error of the function (or of its environment) is an outcome, not a throw. */
  async invoke(event: unknown): Promise<InvokeOutcome> {
    if (this.closed)
      return failure('Emulator.Closed', `${this.settings.name}: the emulator is shutting down`);
    const environment = await this.acquire();
    if ('error' in environment) return { ok: false, error: environment.error };
    this.invocations += 1;
    try {
      return await this.run(environment, event);
    } finally {
      environment.busy = false;
      this.waiting.shift()?.();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const wake of this.waiting.splice(0)) wake();
    await Promise.all(this.environments.splice(0).map((e) => stopChild(e.child)));
  }

  private async acquire(): Promise<Environment | { error: LambdaError }> {
    for (;;) {
      if (this.closed) return { error: { errorType: 'Emulator.Closed', errorMessage: 'shutting down' } };
      const idle = this.environments.find((e) => !e.busy && e.child.exitCode === null && e.child.connected);
      if (idle !== undefined) {
        idle.busy = true;
        return idle;
      }
      if (this.environments.length + this.starting < this.settings.maxConcurrency) {
        this.starting += 1;
        try {
          const started = await this.start();
          if ('error' in started) return started;
          started.busy = true;
          this.environments.push(started);
          return started;
        } finally {
          this.starting -= 1;
        }
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  /** A cold start: a new process imports the bundle, as a new execution environment does. */
  private start(): Promise<Environment | { error: LambdaError }> {
    const s = this.settings;
    const child = fork(BOOTSTRAP, [s.entry, s.exportName], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        ...s.environment,
        AWS_LAMBDA_FUNCTION_NAME: s.name,
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(s.memoryMiB),
        AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
        LAMBDA_TASK_ROOT: path.dirname(s.entry),
        TZ: 'UTC',
      },
      execArgv: [],
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    for (const stream of [child.stdout, child.stderr]) {
      let partial = '';
      stream?.on('data', (chunk: Buffer) => {
        const lines = (partial + chunk.toString('utf8')).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) if (line !== '') s.log(s.name, line);
      });
    }
    return new Promise((resolve) => {
      const onMessage = (message: { type?: string; error?: LambdaError }) => {
        if (message.type === 'ready') {
          child.off('exit', onExit);
          child.off('message', onMessage);
          resolve({ child, busy: false });
        } else if (message.type === 'init-error') {
          child.off('exit', onExit);
          child.off('message', onMessage);
          resolve({ error: { ...(message.error as LambdaError), errorType: 'Runtime.InitError' } });
        }
      };
      const onExit = (code: number | null) =>
        resolve({ error: { errorType: 'Runtime.ExitError', errorMessage: `init exited with ${code}` } });
      child.on('message', onMessage);
      child.once('exit', onExit);
    });
  }

  private run(environment: Environment, event: unknown): Promise<InvokeOutcome> {
    const s = this.settings;
    const id = randomUUID();
    const { child } = environment;
    return new Promise((resolve) => {
      const pending: Pending = { resolve };
      const finish = (outcome: InvokeOutcome) => {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
        pending.resolve(outcome);
      };
      const onMessage = (message: { type?: string; id?: string; value?: unknown; error?: LambdaError }) => {
        if (message.id !== id) return;
        if (message.type === 'error') return finish({ ok: false, error: message.error as LambdaError });
        const size = Buffer.byteLength(JSON.stringify(message.value ?? null));
        if (size > MAX_RESPONSE_BYTES) {
          return finish(
            failure(
              'Function.ResponseSizeTooLarge',
              `Response payload size (${size} bytes) exceeded maximum allowed payload size (${MAX_RESPONSE_BYTES} bytes).`,
            ),
          );
        }
        finish({ ok: true, value: message.value });
      };
      const onExit = (code: number | null, signal: string | null) => {
        this.forget(environment);
        finish(failure('Runtime.ExitError', `RequestId: ${id} Error: Runtime exited (${signal ?? code})`));
      };
      // Lambda ends the environment at the timeout; the next invocation starts a new one.
      const timer = setTimeout(() => {
        this.forget(environment);
        child.kill('SIGKILL');
        finish(failure('Sandbox.Timedout', `Task timed out after ${s.timeoutSeconds.toFixed(2)} seconds`));
      }, s.timeoutSeconds * 1000);
      child.on('message', onMessage);
      child.once('exit', onExit);
      child.send({
        type: 'invoke',
        id,
        event,
        timeoutMs: s.timeoutSeconds * 1000,
        clockOffsetMs: s.clockOffsetMs(),
        context: {
          awsRequestId: id,
          functionName: s.name,
          functionVersion: '$LATEST',
          invokedFunctionArn: s.arn,
          memoryLimitInMB: String(s.memoryMiB),
          logGroupName: `/aws/lambda/${s.name}`,
          logStreamName: `emulated/${child.pid}`,
        },
      });
    });
  }

  private forget(environment: Environment): void {
    const index = this.environments.indexOf(environment);
    if (index >= 0) this.environments.splice(index, 1);
  }
}

function failure(errorType: string, errorMessage: string): InvokeOutcome {
  return { ok: false, error: { errorType, errorMessage } };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
  await exited;
  clearTimeout(timer);
}
