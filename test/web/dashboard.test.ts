// The dashboard in a real browser (Debian's Chromium through playwright-core) against a real
// server with the Docker backend and a bearer token: signing in, the executions list and its
// filters and pages, a running job's output followed live, cancelling it, and reviewing results.
// Every page runs under the served Content-Security-Policy; a violation fails the test.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { FerryClient } from '../../cli/client.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import { openWatchedPage } from '../support/browser.ts';
import { measureDashboard, seedExecutions } from '../support/dashboard-load.ts';
import { startServer, submit, type TestServer, waitDone, waitFor } from '../support/server.ts';

const dockerAvailable = inject('dockerAvailable');
const image = inject('testImage');
const CHROMIUM = process.env.FERRY_CHROMIUM ?? '/usr/bin/chromium';
const browserAvailable = fs.existsSync(CHROMIUM);
if (process.env.CI === 'true' && (!dockerAvailable || !browserAvailable)) {
  throw new Error(
    `CI=true but ${dockerAvailable ? `no Chromium at ${CHROMIUM}` : 'no Docker Engine'}: the dashboard suite must run`,
  );
}

const TOKEN = 'dashboard-test-token';
const small = { cpu: 0.25, memory: 64 };

let server: TestServer;
let client: FerryClient;
let browser: Browser;
/** What the pages reported that a test must not see: CSP violations, script errors. */
let faults: string[] = [];

beforeAll(async () => {
  if (!dockerAvailable || !browserAvailable) return;
  // The pages of this checkout, as `npm ci` builds them.
  execFileSync(process.execPath, ['scripts/build-web.mjs'], { stdio: 'ignore' });
  server = await startServer({ FERRY_TOKEN: TOKEN, FERRY_MAX_CONCURRENCY: '8' });
  client = new FerryClient(server.url, TOKEN);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

afterEach(() => {
  expect(faults).toEqual([]);
  faults = [];
});

const openPage = (): Promise<Page> => openWatchedPage(browser, faults);

async function signedIn(hash = '#/'): Promise<Page> {
  const page = await openPage();
  await page.goto(`${server.url}/${hash}`);
  await page.getByLabel('Bearer token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
  return page;
}

const rowsOf = (page: Page) => page.locator('table.executions tbody tr');

/**
 * With FERRY_SCREENSHOTS=DIR, saves the page as DIR/NAME.png: the README's pictures of the
 * dashboard are taken this way (FERRY_SCREENSHOTS=docs/screenshots npx vitest run test/web).
 */
async function shot(page: Page, name: string, fullPage = false): Promise<void> {
  const dir = process.env.FERRY_SCREENSHOTS;
  if (dir === undefined || dir === '') return;
  fs.mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: `${dir}/${name}.png`, fullPage });
}

describe.skipIf(!dockerAvailable || !browserAvailable)('the dashboard', () => {
  it('is served with a policy that allows only its own origin, and no inline script', async () => {
    const response = await fetch(`${server.url}/`);
    expect(response.status).toBe(200);
    const policy = response.headers.get('content-security-policy') ?? '';
    expect(policy).toContain("default-src 'self'");
    expect(policy).toContain("script-src 'self'");
    expect(policy).not.toMatch(/unsafe-inline|unsafe-eval|\*/);
    const html = await response.text();
    expect(html).toMatch(/<script type="module" crossorigin src="\/assets\/[^"]+\.js"><\/script>/);
    // Every script has a source; none is written in the page.
    expect(html.match(/<script\b[^>]*>/g)?.every((tag) => /\ssrc="/.test(tag))).toBe(true);
    expect(html).not.toMatch(/\sstyle="|\son[a-z]+="/);
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1] ?? '';
    const asset = await fetch(`${server.url}${script}`);
    expect(asset.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(asset.headers.get('cache-control')).toContain('immutable');
    // The pages need no token; the API behind them does.
    expect((await fetch(`${server.url}/v1/executions`)).status).toBe(401);
  });

  it('refuses a wrong token, and signs in with the right one', async () => {
    const page = await openPage();
    await page.goto(`${server.url}/`);
    await page.getByLabel('Bearer token').fill('not-the-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toBe('the bearer token is not valid');
    await expect(page.getByRole('heading', { name: 'Executions' }).count()).resolves.toBe(0);
    await page.getByLabel('Bearer token').fill(TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Executions' }).waitFor();
    // Kept for the session: a reload does not ask again.
    await page.reload();
    await page.getByRole('heading', { name: 'Executions' }).waitFor();
    await expect(page.getByLabel('Bearer token').count()).resolves.toBe(0);
    await page.context().close();
  });

  it('lists executions, filters them by state, label and image, and pages through them', async () => {
    const label = `run-${Date.now()}`;
    const jobs = await Promise.all(
      ['a', 'b', 'c'].map((team) =>
        submit(client, { image, command: ['true'], resources: small, labels: { suite: label, team } }),
      ),
    );
    for (const job of jobs) await waitDone(client, job.id);
    // A bid that was never accepted, for another image.
    const offered = (
      await client.json<{ executionId: string }>('POST', '/v1/bids', {
        image: `${image}-other`,
        command: ['true'],
        labels: { suite: label },
      })
    ).body.executionId;

    const page = await signedIn(`#/?label=suite%3D${label}`);
    await expect.poll(() => rowsOf(page).count()).toBe(4);
    // The counts per state are the caller's, whatever the filter; each links to its state.
    const counts = (await client.json<{ counts: Record<string, number> }>('GET', '/v1/executions/counts'))
      .body.counts;
    expect(counts.COMPLETED).toBeGreaterThanOrEqual(3);
    await expect
      .poll(() => page.locator('.counts a[data-state="COMPLETED"] strong').textContent())
      .toBe(String(counts.COMPLETED));
    await expect
      .poll(() => page.locator('.counts a[data-state="OFFERED"] strong').textContent())
      .toBe(String(counts.OFFERED));
    await shot(page, 'executions');
    // Newest first, each with its state, exit code and labels.
    const first = rowsOf(page).first();
    expect(await first.getAttribute('data-id')).toBe(offered);
    const completed = rowsOf(page).filter({ hasText: 'team=a' });
    await expect.poll(() => completed.locator('.state').textContent()).toBe('COMPLETED');
    expect(await completed.locator('td.number').textContent()).toBe('0');

    await page.getByLabel('State', { exact: true }).selectOption('COMPLETED');
    await page.getByRole('button', { name: 'Filter' }).click();
    await expect.poll(() => rowsOf(page).count()).toBe(3);
    expect(page.url()).toContain('state=COMPLETED');

    await page.getByLabel('Label').fill(`suite=${label}, team=b`);
    await page.getByRole('button', { name: 'Filter' }).click();
    await expect
      .poll(() => rowsOf(page).evaluateAll((rows) => rows.map((row) => row.getAttribute('data-id'))))
      .toEqual([jobs[1]?.id]);

    const shownIds = () => rowsOf(page).evaluateAll((rows) => rows.map((row) => row.getAttribute('data-id')));
    await page.goto(`${server.url}/#/?label=suite%3D${label}&image=${encodeURIComponent(`${image}-other`)}`);
    await expect.poll(shownIds).toEqual([offered]);

    // Two to a page: the four make two pages, newest first.
    await page.goto(`${server.url}/#/?label=suite%3D${label}&limit=2`);
    await expect.poll(() => shownIds().then((ids) => ids.length)).toBe(2);
    await expect.poll(() => shownIds().then((ids) => ids[0])).toBe(offered);
    const newer = await shownIds();
    await page.getByRole('button', { name: 'Older' }).click();
    await expect.poll(() => page.getByText('Page 2').count()).toBe(1);
    await expect
      .poll(() => shownIds().then((ids) => ids.length > 0 && !ids.some((id) => newer.includes(id))))
      .toBe(true);
    const older = await shownIds();
    expect(new Set([...newer, ...older])).toEqual(new Set([offered, ...jobs.map((job) => job.id)]));
    await expect(page.getByRole('button', { name: 'Older' }).isDisabled()).resolves.toBe(true);
    await page.getByRole('button', { name: 'Newer' }).click();
    await expect.poll(() => rowsOf(page).first().getAttribute('data-id')).toBe(newer[0]);
    await page.context().close();
  });

  it('reads the counts again when the rows shown change, not on every refresh of an idle list', async () => {
    const label = `counts-${Date.now()}`;
    const first = await submit(client, {
      image,
      command: ['true'],
      resources: small,
      labels: { suite: label },
    });
    await waitDone(client, first.id);
    const page = await signedIn(`#/?label=suite%3D${label}`);
    const asked: string[] = [];
    page.on('request', (request) => {
      const path = new URL(request.url()).pathname;
      if (path.startsWith('/v1/executions')) asked.push(path);
    });
    await expect.poll(() => rowsOf(page).count()).toBe(1);
    await page.locator('.counts a[data-state="COMPLETED"]').waitFor();
    asked.length = 0;

    // Idle for three refreshes and more: the list is read each time, the counts not again.
    await page.waitForTimeout(7000);
    expect(asked.filter((path) => path === '/v1/executions').length).toBeGreaterThanOrEqual(3);
    expect(asked.filter((path) => path === '/v1/executions/counts')).toEqual([]);

    // A new row: the counts follow it.
    const second = await submit(client, {
      image,
      command: ['true'],
      resources: small,
      labels: { suite: label },
    });
    await waitDone(client, second.id);
    const completed = (await client.json<{ counts: Record<string, number> }>('GET', '/v1/executions/counts'))
      .body.counts.COMPLETED;
    await expect
      .poll(() => page.locator('.counts a[data-state="COMPLETED"] strong').textContent(), { timeout: 10_000 })
      .toBe(String(completed));
    expect(asked).toContain('/v1/executions/counts');
    await page.context().close();
  });

  it('follows a running job: a line it prints shows within 2 s; it is cancelled from the page', async () => {
    const job = await submit(client, {
      image,
      resources: small,
      command: [
        'sh',
        '-c',
        "echo started; printf '\\033[32mgreen\\033[0m \\033[38;2;255;0;128mpink\\033[0m \\033[38;5;208morange\\033[0m\\n'; sleep 4; echo the-line; sleep 300",
      ],
    });
    await waitFor(client, job.id, ['RUNNING']);
    const page = await signedIn(`#/executions/${job.id}`);
    const stdout = page.locator('pre[data-stream="stdout"]');
    await stdout.getByText('started').waitFor();
    // Colours are rendered, not shown as escape codes.
    await expect(stdout.locator('span.ansi-green-fg').textContent()).resolves.toBe('green');
    // A 24-bit colour is a style property set from script, which the page's policy allows.
    const pink = stdout.getByText('pink');
    const colourOf = (element: unknown) =>
      (globalThis as unknown as { getComputedStyle(e: unknown): { color: string } }).getComputedStyle(element)
        .color;
    await expect(pink.evaluate(colourOf)).resolves.toBe('rgb(255, 0, 128)');
    // A 256-colour one, from xterm's cube: 208 is 5,2,0 → 255,135,0.
    await expect(stdout.getByText('orange').evaluate(colourOf)).resolves.toBe('rgb(255, 135, 0)');
    expect(await stdout.textContent()).not.toContain('\u001b');

    // When the server first has the line, and when the page shows it.
    const served = (async () => {
      for (;;) {
        const body = (await client.bytes(`/v1/executions/${job.id}/logs?stream=stdout&offset=0`)).body;
        if (body.toString().includes('the-line')) return Date.now();
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    })();
    await stdout.getByText('the-line').waitFor({ timeout: 15_000 });
    const shown = Date.now();
    const lag = shown - (await served);
    expect(lag).toBeLessThan(2000);
    await shot(page, 'execution');

    await page.getByRole('button', { name: 'Cancel' }).click();
    await page.locator('h1 .state', { hasText: 'CANCELLED' }).waitFor({ timeout: 30_000 });
    expect((await client.json<Execution>('GET', `/v1/executions/${job.id}`)).body.state).toBe('CANCELLED');
    await expect(page.getByRole('button', { name: 'Cancel' }).count()).resolves.toBe(0);
    await page.context().close();
  });

  it('accepts one result and rejects another, with the caller’s justification', async () => {
    const [good, bad] = await Promise.all([
      submit(client, { image, resources: small, command: ['sh', '-c', 'echo good'] }),
      submit(client, { image, resources: small, command: ['sh', '-c', 'echo bad'] }),
    ]);
    await waitDone(client, good.id);
    await waitDone(client, bad.id);

    const page = await signedIn(`#/executions/${good.id}`);
    await page.getByRole('heading', { name: 'Result' }).waitFor();
    await page.getByLabel('Justification').fill('looks right');
    await page.getByRole('button', { name: 'Accept result' }).click();
    await page.getByText('Result accepted: looks right').waitFor();
    const accepted = (await client.json<Execution>('GET', `/v1/executions/${good.id}`)).body;
    expect(accepted.result).toMatchObject({ review: 'ACCEPTED', justification: 'looks right' });

    await page.goto(`${server.url}/#/executions/${bad.id}`);
    await page.getByRole('heading', { name: 'Result' }).waitFor();
    await page.getByLabel('Justification').fill('wrong numbers');
    await page.getByRole('button', { name: 'Reject result' }).click();
    await page.getByText('Result rejected: wrong numbers').waitFor();
    const rejected = (await client.json<Execution>('GET', `/v1/executions/${bad.id}`)).body;
    expect(rejected.result).toMatchObject({ review: 'REJECTED', justification: 'wrong numbers' });
    // The timeline records the review.
    await expect(page.locator('.timeline').textContent()).resolves.toContain('REJECTED');
    await page.context().close();
  });

  it('submits through the form: shows the bid, runs the job once accepted, and says why a bid is declined', async () => {
    const page = await signedIn('#/submit');
    await page.getByLabel('Image').fill(image);
    await page.getByLabel('Command').fill('sh\n-c\necho from the form');
    await page.getByLabel('vCPU').fill('0.25');
    await page.getByLabel('Memory').fill('64');
    await page.getByLabel('Labels').fill('via=form');
    await page.getByRole('button', { name: 'Ask for a bid' }).click();
    // The offer: accepted, with its size and price, before anything runs.
    await page.getByRole('heading', { name: 'Ferry offers' }).waitFor();
    await expect(page.locator('.offer [data-bid="accepted"]').count()).resolves.toBe(1);
    await expect(page.locator('.offer .facts').textContent()).resolves.toMatch(/0\.25 vCPU, 64 MiB.*\$/);
    await shot(page, 'submit', true);
    await page.getByRole('button', { name: 'Accept and run' }).click();
    await page.locator('h1 .state', { hasText: 'COMPLETED' }).waitFor({ timeout: 30_000 });
    const id = decodeURIComponent(new URL(page.url()).hash.replace('#/executions/', ''));
    const done = (await client.json<Execution>('GET', `/v1/executions/${id}`)).body;
    expect(done.spec).toMatchObject({
      image,
      command: ['sh', '-c', 'echo from the form'],
      labels: { via: 'form' },
    });
    await page.locator('pre[data-stream="stdout"]').getByText('from the form').waitFor();

    // More than this host has: declined, and the page says what was asked and what is possible.
    await page.goto(`${server.url}/#/submit`);
    await page.getByLabel('Image').fill(image);
    await page.getByLabel('Command').fill('true');
    await page.getByLabel('vCPU').fill('512');
    await page.getByRole('button', { name: 'Ask for a bid' }).click();
    await page.getByRole('heading', { name: 'Ferry declines' }).waitFor();
    const reason = await page.locator('.offer [data-bid="declined"]').textContent();
    expect(reason).toMatch(/^Declined: .*512 vCPU/);
    await expect(page.getByRole('button', { name: 'Accept and run' }).count()).resolves.toBe(0);

    // A spec Ferry cannot read: the field is named beside it.
    await page.getByLabel('vCPU').fill('1');
    await page.getByLabel('Timeout').fill('soon');
    await page.getByRole('button', { name: 'Ask for a bid' }).click();
    await page.getByRole('alert').waitFor();
    await expect(page.locator('.field.invalid').count()).resolves.toBeGreaterThan(0);
    await expect(page.locator('#submit-timeoutSeconds-error').textContent()).resolves.toMatch(
      /^timeoutSeconds: /,
    );
    await page.context().close();
  });

  it('renders the API reference from the server’s own OpenAPI document', async () => {
    const document = (
      await client.json<{ paths: Record<string, Record<string, unknown>> }>('GET', '/v1/openapi.json')
    ).body;
    const operations = Object.values(document.paths).flatMap((item) =>
      Object.keys(item).filter((key) => ['get', 'post', 'put', 'patch', 'delete'].includes(key)),
    ).length;
    const page = await signedIn('#/reference');
    await expect.poll(() => page.locator('details.operation').count()).toBe(operations);
    await shot(page, 'reference');
    const counts = page.locator('details.operation#countExecutions');
    await counts.locator('summary').click();
    await expect(counts.textContent()).resolves.toContain('/v1/executions/counts');
    await counts.getByRole('link', { name: 'StateCounts' }).click();
    await expect.poll(() => page.locator('.schema pre.json').textContent()).toContain('"atLeast"');
    await page.context().close();
  });

  it('shows the node: capacity, what runs and waits now, and the last hour as a chart', async () => {
    const job = await submit(client, { image, resources: small, command: ['sleep', '30'] });
    await waitFor(client, job.id, ['RUNNING']);
    const page = await signedIn('#/node');
    await expect.poll(() => page.locator('[data-value="running"]').textContent()).toMatch(/^[1-9]\d* of 8$/);
    // The sweeper (every 0.5 s here) has kept at least this minute's sample.
    const chart = page.getByRole('img', { name: /^Jobs over the last hour: [1-9]\d* samples/ });
    await chart.waitFor();
    await expect.poll(() => chart.getAttribute('aria-label')).toMatch(/now [1-9]\d* running/);
    await expect(page.locator('svg path.series.running').count()).resolves.toBe(1);
    await shot(page, 'node');
    await client.json('POST', `/v1/executions/${job.id}/cancel`);
    await page.context().close();
  });

  it('loads the list with 10,000 executions stored, and pages 100 MB of output rather than loading it', async () => {
    const owner = `local:token/${createHash('sha256').update(TOKEN).digest('hex').slice(0, 16)}`;
    await seedExecutions(server.server.core, owner, 10_000);
    const load = await measureDashboard({
      browser,
      url: server.url,
      token: TOKEN,
      client,
      image,
      stored: 10_000,
      outputBytes: 100 * 1000 * 1000,
      waitDone: (id) => waitDone(client, id, 120),
    });
    console.log(`dashboard under load: ${JSON.stringify(load)}`);
    // The targets (under 1 s to each page, no task over 200 ms) are judged by `npm run bench`
    // (step 13) on a quiet machine; here, on a busy one, the bounds only catch a page that
    // reads the whole list or the whole 100 MB, which takes many seconds and long tasks.
    expect(load.listMs).toBeLessThan(5000);
    expect(load.outputFirstMs).toBeLessThan(5000);
    expect(load.outputLastMs).toBeLessThan(5000);
    expect(load.longestTaskMs).toBeLessThan(1000);
  }, 240_000);
});
