// `ferry dashboard` for a deployment on AWS: the stack `cdk deploy` ships, started on the AWS
// emulator with real containers, whose API takes only SigV4-signed requests from callers IAM
// allows. The real CLI is started as a user starts it, with the user's AWS keys; the pages run in
// Chromium at the address it prints, and their calls reach the deployed API signed as that user.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Execution } from '../../shared/domain/execution.ts';
import type { Caller } from '../../shared/runtime/emulated-aws.ts';
import { openWatchedPage } from '../support/browser.ts';
import { describeDenials, type Harness, startHarness } from '../support/emulated-aws.ts';

const dockerAvailable = inject('dockerAvailable');
const image = inject('testImage');
const CHROMIUM = process.env.FERRY_CHROMIUM ?? '/usr/bin/chromium';
const browserAvailable = fs.existsSync(CHROMIUM);
if (process.env.CI === 'true' && (!dockerAvailable || !browserAvailable)) {
  throw new Error(
    `CI=true but ${dockerAvailable ? `no Chromium at ${CHROMIUM}` : 'no Docker Engine'}: the dashboard suite must run`,
  );
}

interface Launched {
  readonly child: ChildProcess;
  /** The address it printed, token and all. */
  readonly address: string;
  readonly origin: string;
  readonly token: string;
  readonly exited: Promise<number | null>;
  stderr(): string;
}

/** `ferry dashboard --sigv4 --region us-east-1` with a user's environment and the caller's keys. */
function ferryDashboard(caller: Caller, apiUrl: string): ChildProcess {
  return spawn(process.execPath, ['bin/ferry.js', 'dashboard', '--sigv4', '--region', 'us-east-1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      FERRY_URL: apiUrl,
      AWS_ACCESS_KEY_ID: caller.accessKeyId,
      AWS_SECRET_ACCESS_KEY: caller.secretAccessKey,
    },
  });
}

function outputOf(child: ChildProcess) {
  let out = '';
  let err = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    err += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { out: () => out, err: () => err, exited };
}

async function launch(caller: Caller, apiUrl: string): Promise<Launched> {
  const child = ferryDashboard(caller, apiUrl);
  const output = outputOf(child);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const printed = /(http:\/\/127\.0\.0\.1:\d+)\/#token=(\S+)/.exec(output.out());
    if (printed?.[1] !== undefined && printed[2] !== undefined) {
      return {
        child,
        address: printed[0],
        origin: printed[1],
        token: printed[2],
        exited: output.exited,
        stderr: output.err,
      };
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`ferry dashboard did not start:\n${output.out()}${output.err()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

let h: Harness;
let dashboard: Launched;
let browser: Browser;
let callsBefore = 0;
/** What the pages reported that a test must not see: CSP violations, script errors. */
let faults: string[] = [];

beforeAll(async () => {
  if (!dockerAvailable || !browserAvailable) return;
  execFileSync(process.execPath, ['scripts/build-web.mjs'], { stdio: 'ignore' });
  h = await startHarness();
  dashboard = await launch(h.caller, h.deployment.apiUrl);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  callsBefore = h.deployment.calls.length;
}, 240_000);

afterAll(async () => {
  await browser?.close();
  dashboard?.child.kill('SIGINT');
  await h?.close();
});

afterEach(async () => {
  expect(faults).toEqual([]);
  faults = [];
  const denied = h.denied(callsBefore);
  callsBefore = h.deployment.calls.length;
  expect(denied, describeDenials(denied)).toEqual([]);
});

const openPage = (): Promise<Page> => openWatchedPage(browser, faults);

const executionOf = async (id: string) =>
  (await h.client.json<Execution>('GET', `/v1/executions/${id}`)).body;

describe.skipIf(!dockerAvailable || !browserAvailable)('ferry dashboard for a deployment on AWS', () => {
  it('opens at the printed address and shows the caller’s executions, read through the signed API', async () => {
    const job = await h.submit({ image, command: ['sh', '-c', 'echo from-fargate'], labels: { via: 'cli' } });
    await h.waitFor(job.id);

    const page = await openPage();
    await page.goto(dashboard.address);
    await page.getByRole('heading', { name: 'Executions' }).waitFor();
    // The token went into the session and out of the address bar and the history.
    expect(new URL(page.url()).hash).toBe('#/');
    const browserSide = () => {
      const window = globalThis as unknown as {
        sessionStorage: { getItem(key: string): string | null };
        history: { length: number };
      };
      return { kept: window.sessionStorage.getItem('ferry.token'), entries: window.history.length };
    };
    // Two entries: the blank page the tab opened on, and the dashboard, whose address with the
    // token was replaced rather than followed by another.
    await expect(page.evaluate(browserSide)).resolves.toEqual({ kept: dashboard.token, entries: 2 });
    // A row the API gave for the caller the dashboard signs as: alice's job.
    const row = page.locator(`table.executions tbody tr[data-id="${job.id}"]`);
    await row.waitFor();
    await expect(row.locator('.state').textContent()).resolves.toBe('COMPLETED');

    await page.goto(`${dashboard.origin}/#/executions/${job.id}`);
    await page.locator('pre[data-stream="stdout"]').getByText('from-fargate').waitFor();
    // The bid names the Fargate size the job ran on.
    await expect(page.locator('body').textContent()).resolves.toMatch(
      /0\.25 vCPU, 512 MiB.*\(Fargate 256\/512\)/,
    );
    await page.getByLabel('Justification').fill('checked through the dashboard');
    await page.getByRole('button', { name: 'Accept result' }).click();
    await page.getByText('Result accepted: checked through the dashboard').waitFor();
    expect((await executionOf(job.id)).result).toMatchObject({
      review: 'ACCEPTED',
      justification: 'checked through the dashboard',
    });
    await page.context().close();
  });

  it('submits through the form with the Fargate bid shown, follows the job live and cancels it', async () => {
    const page = await openPage();
    await page.goto(dashboard.address);
    await page.getByRole('link', { name: 'Submit' }).click();
    await page.getByLabel('Image').fill(image);
    await page
      .getByLabel('Command')
      .fill('sh\n-c\necho via-dashboard; sleep 4; echo still-running; sleep 300');
    await page.getByLabel('vCPU').fill('0.3');
    await page.getByLabel('Memory').fill('600');
    await page.getByLabel('Labels').fill('via=dashboard');
    await page.getByRole('button', { name: 'Ask for a bid' }).click();
    await page.getByRole('heading', { name: 'Ferry offers' }).waitFor();
    // Rounded up to the smallest Fargate size that holds it.
    await expect(page.locator('.offer .facts').textContent()).resolves.toMatch(
      /0\.5 vCPU, 1024 MiB.*\(Fargate 512\/1024\)/,
    );
    await page.getByRole('button', { name: 'Accept and run' }).click();

    const stdout = page.locator('pre[data-stream="stdout"]');
    await stdout.getByText('via-dashboard').waitFor({ timeout: 60_000 });
    await stdout.getByText('still-running').waitFor({ timeout: 30_000 });
    const id = decodeURIComponent(new URL(page.url()).hash.replace('#/executions/', ''));
    const running = await executionOf(id);
    expect(running.state).toBe('RUNNING');
    expect(running.owner).toBe(h.caller.arn);
    expect(running.spec).toMatchObject({ labels: { via: 'dashboard' } });

    await page.getByRole('button', { name: 'Cancel' }).click();
    await page.locator('h1 .state', { hasText: 'CANCELLED' }).waitFor({ timeout: 60_000 });
    expect((await executionOf(id)).state).toBe('CANCELLED');
    await h.expectLedgerEmpty();
    await page.context().close();
  });

  it('keeps other sites’ pages out: what they send reaches nothing, even with the token', async () => {
    const idsNow = async () =>
      (await h.client.json<{ items: Execution[] }>('GET', '/v1/executions?limit=100')).body.items.map(
        (execution) => execution.id,
      );
    const before = await idsNow();
    // A page on another origin of this machine, as a site the user has open would be.
    const other = http.createServer((_, response) => {
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end('<!doctype html><title>elsewhere</title>');
    });
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const elsewhere = `http://localhost:${(other.address() as AddressInfo).port}/`;
    try {
      const page = await openPage();
      await page.goto(elsewhere);
      const statuses = await page.evaluate(
        async ({ target, spec, token }) => {
          const spent: string[] = [];
          const attempt = (name: string, init: RequestInit) =>
            fetch(`${target}/v1/jobs`, { method: 'POST', body: JSON.stringify(spec), ...init }).then(
              (reply) => spent.push(`${name}:${reply.type}`),
              (error: Error) => spent.push(`${name}:${error.name}`),
            );
          // A form-like POST, which needs no preflight and cannot carry the token.
          await attempt('blind', { mode: 'no-cors', headers: { 'content-type': 'text/plain' } });
          // A page that somehow has the token: its request needs a preflight the server refuses.
          await attempt('with-token', {
            headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          });
          return spent;
        },
        { target: dashboard.origin, spec: { image, command: ['echo', 'planted'] }, token: dashboard.token },
      );
      expect(statuses).toEqual(['blind:opaque', 'with-token:TypeError']);
      await page.context().close();
    } finally {
      await new Promise((resolve) => other.close(resolve));
    }
    // Neither made a job: the first lacked the token, the second never got past the preflight.
    expect(await idsNow()).toEqual(before);
    const preflight = await fetch(`${dashboard.origin}/v1/jobs`, {
      method: 'OPTIONS',
      headers: { origin: elsewhere.replace(/\/$/, ''), 'access-control-request-method': 'POST' },
    });
    expect(preflight.status).toBe(403);
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
    // Without the launch token, the same origin's own pages get nothing either.
    const unsigned = await fetch(`${dashboard.origin}/v1/executions`);
    expect(unsigned.status).toBe(401);
  });

  it('says what IAM said when the user may not call the API, and stops', async () => {
    const mallory = h.deployment.addCaller('mallory', false);
    const child = ferryDashboard(mallory, h.deployment.apiUrl);
    const output = outputOf(child);

    expect(await output.exited).toBe(1);
    expect(output.out()).toBe('');
    const lines = output.err().trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^ferry: the API at ${h.deployment.apiUrl.replace(/[.]/g, '\\.')} did not answer the dashboard's first call \\(403: User: arn:aws:iam::\\d+:user/mallory is not authorized to perform: execute-api:Invoke`,
      ),
    );
    // The one call it made, refused by IAM as API Gateway would refuse it.
    const refused = h.denied(callsBefore);
    expect(refused.map((call) => `${call.principal} ${call.operation}`)).toEqual([
      'user/mallory GET /v1/node',
    ]);
    callsBefore = h.deployment.calls.length;
  });

  it('stops on Ctrl-C', async () => {
    const second = await launch(h.caller, h.deployment.apiUrl);
    second.child.kill('SIGINT');
    expect(await second.exited).toBe(0);
    await expect(fetch(`${second.origin}/`)).rejects.toThrow();
  });
});
