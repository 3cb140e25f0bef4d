// Starts LocalStack's S3, SQS and EventBridge on a free loopback port, without Docker and
// without reaching the network. It lives in its own virtualenv (.venv-localstack, pinned in
// test/aws/localstack-requirements.txt), created when missing; each run gets a directory of
// its own under the OS temp dir, removed when it stops.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './moto.ts';

const VENV = path.resolve('.venv-localstack');
const REQUIREMENTS = path.resolve('test/aws/localstack-requirements.txt');
const LAUNCH = path.resolve('test/support/localstack-launch.py');
const PYTHON = path.join(VENV, 'bin', 'python');
/** A copy of the requirements the venv was built from: a changed pin rebuilds it. */
const INSTALLED = path.join(VENV, 'ferry-requirements.txt');
/**
 * LocalStack indexes every AWS service model before it answers, which takes seconds and
 * leaves the process ~350 MiB larger; the index is built once per venv and copied in.
 */
const CATALOG = path.join(VENV, 'ferry-catalog');
const LOCALSTACK_SERVICES = ['s3', 'sqs', 'events'] as const;
const STOP_GRACE_MS = 5_000;

/** Python 3.13 or 3.12, as .ci/run picks for .venv: LocalStack's runtime needs 3.12 or newer. */
function python(): string {
  if (process.env.PYTHON !== undefined) return process.env.PYTHON;
  const versions = path.join(process.env.PYENV_ROOT ?? path.join(os.homedir(), '.pyenv'), 'versions');
  for (const minor of ['3.13', '3.12']) {
    const found = fs.existsSync(versions)
      ? fs
          .readdirSync(versions)
          .filter((name) => name.startsWith(`${minor}.`))
          .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }))
          .pop()
      : undefined;
    if (found !== undefined) return path.join(versions, found, 'bin', 'python3');
  }
  return 'python3';
}

function ensureLocalStack(): void {
  const wanted = fs.readFileSync(REQUIREMENTS, 'utf8');
  if (fs.existsSync(INSTALLED) && fs.readFileSync(INSTALLED, 'utf8') === wanted) return;
  console.log(`[ferry tests] installing LocalStack into ${VENV} from ${REQUIREMENTS}`);
  if (!fs.existsSync(PYTHON)) {
    const interpreter = python();
    try {
      execFileSync(interpreter, ['-c', 'import sys; sys.exit(sys.version_info < (3, 12))']);
    } catch {
      throw new Error(`LocalStack needs Python 3.12 or newer; set PYTHON to one (${interpreter} is older)`);
    }
    execFileSync(interpreter, ['-m', 'venv', VENV], { stdio: 'inherit' });
  }
  execFileSync(path.join(VENV, 'bin', 'pip'), ['install', '--quiet', '-r', REQUIREMENTS], {
    stdio: 'inherit',
  });
  fs.rmSync(CATALOG, { recursive: true, force: true });
  fs.writeFileSync(INSTALLED, wanted);
}

/**
 * What keeps LocalStack to itself: its files under `root`, and nothing that reaches the network.
 * Nothing is inherited from this process but what finds programs and home.
 */
function offline(root: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    // This machine looks like a container to LocalStack, which would then share
    // /var/lib/localstack and /tmp/localstack between runs and wipe the latter at each start.
    OVERRIDE_IN_DOCKER: '0',
    FILESYSTEM_ROOT: root,
    TMPDIR: path.join(root, 'tmp'),
    PERSISTENCE: '0',
    DNS_ADDRESS: '0',
    DISABLE_EVENTS: '1',
    SKIP_SSL_CERT_DOWNLOAD: '1',
  };
}

/** The services, on a gateway that answers on the loopback port only. */
function gateway(port: number): NodeJS.ProcessEnv {
  const self = `127.0.0.1:${port}`;
  return {
    SERVICES: LOCALSTACK_SERVICES.join(','),
    EAGER_SERVICE_LOADING: '1',
    GATEWAY_LISTEN: self,
    // Twisted, the default server, binds every interface whatever GATEWAY_LISTEN names.
    GATEWAY_SERVER: 'hypercorn',
    // Queue URLs name the gateway itself rather than sqs.<region>.localhost.localstack.cloud,
    // which only DNS resolves (and the SQS client sends requests to its queue URL's host).
    LOCALSTACK_HOST: self,
    SQS_ENDPOINT_STRATEGY: 'off',
    // A download link is checked as S3 would: its signature and its expiry.
    S3_SKIP_SIGNATURE_VALIDATION: '0',
    // Where LocalStack would ask its vendor which operations a newer or paid edition has (when
    // one is missing here) and send usage reports: answered by itself, with a 404.
    API_ENDPOINT: `http://${self}/_ferry-offline`,
    ANALYTICS_API: `http://${self}/_ferry-offline`,
  };
}

/** Where LocalStack looks for what its image would have built ahead, under FILESYSTEM_ROOT. */
const STATIC_LIBS = path.join('usr', 'lib', 'localstack');

/** A fresh FILESYSTEM_ROOT under the OS temp dir, with the folders LocalStack expects to find. */
function filesystem(prefix: string): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.mkdirSync(path.join(root, STATIC_LIBS), { recursive: true });
  fs.mkdirSync(path.join(root, 'tmp'));
  return root;
}

/** Builds the service index once per venv, in a process of its own, and keeps it. */
function ensureCatalog(): string[] {
  const built = () =>
    fs.existsSync(CATALOG) ? fs.readdirSync(CATALOG).filter((f) => f.endsWith('.dill')) : [];
  if (built().length > 0) return built();
  console.log(`[ferry tests] indexing LocalStack's service models once, into ${CATALOG}`);
  const scratch = filesystem('ferry-localstack-catalog-');
  try {
    execFileSync(PYTHON, ['-m', 'localstack.aws.spec'], {
      env: { ...offline(scratch), LS_LOG: 'warn' },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const staticLibs = path.join(scratch, STATIC_LIBS);
    fs.mkdirSync(CATALOG, { recursive: true });
    for (const file of fs.readdirSync(staticLibs).filter((f) => f.endsWith('.dill'))) {
      // Copied beside, then renamed: another run starting at the same time sees all or nothing.
      const partial = path.join(CATALOG, `.${file}.${process.pid}`);
      fs.copyFileSync(path.join(staticLibs, file), partial);
      fs.renameSync(partial, path.join(CATALOG, file));
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  return built();
}

async function waitUntilUp(endpoint: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 90_000;
  let seen = 'no answer';
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`LocalStack exited with ${child.exitCode ?? child.signalCode}: ${log()}`);
    }
    try {
      const reply = await fetch(`${endpoint}/_localstack/health`, { signal: AbortSignal.timeout(5_000) });
      const health = (await reply.json()) as { services?: Record<string, string> };
      seen = JSON.stringify(health.services ?? {});
      const ready = LOCALSTACK_SERVICES.every((name) =>
        ['available', 'running'].includes(health.services?.[name] ?? ''),
      );
      if (ready) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      throw new Error(`LocalStack did not report ${LOCALSTACK_SERVICES} at ${endpoint} (${seen}): ${log()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

export async function startLocalStack(): Promise<{ endpoint: string; stop: () => Promise<void> }> {
  ensureLocalStack();
  const catalog = ensureCatalog();
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const root = filesystem('ferry-localstack-');
  for (const file of catalog) fs.copyFileSync(path.join(CATALOG, file), path.join(root, STATIC_LIBS, file));

  let output = '';
  const remember = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-6000);
  };
  // A process group of its own, so that stopping it reaches anything it started.
  const child = spawn(PYTHON, [LAUNCH], {
    cwd: root,
    env: { ...offline(root), ...gateway(port) },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', remember);
  child.stderr?.on('data', remember);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  // If the test process ends without its teardown, LocalStack must not outlive it.
  const orphaned = () => killGroup('SIGKILL');
  process.once('exit', orphaned);

  const stop = async () => {
    process.off('exit', orphaned);
    if (child.exitCode === null && child.signalCode === null) {
      killGroup('SIGTERM');
      // Its hypercorn server sometimes never returns from shutdown (the event loop is stopped
      // from another thread); nothing is persisted, so the grace is short.
      const grace = setTimeout(() => killGroup('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(grace);
    }
    killGroup('SIGKILL');
    fs.rmSync(root, { recursive: true, force: true });
  };
  try {
    await waitUntilUp(endpoint, child, () => output);
  } catch (error) {
    await stop();
    throw error;
  }
  return { endpoint, stop };
}
