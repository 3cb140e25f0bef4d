// How the dashboard holds up under load, measured in a real browser: the executions page with
// 10,000 executions stored, and the page of one execution with 100 MB of output (paged, never
// loaded whole). The browser test asserts on these figures and `npm run bench` prints them.
import type { Browser, Page } from 'playwright-core';
import type { FerryClient } from '../../cli/client.ts';
import type { Core } from '../../shared/core.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import { offeredExecution } from './fixtures.ts';

export interface DashboardLoad {
  readonly stored: number;
  /** From navigation to the first page of the list shown, in the page's own clock. */
  readonly listMs: number;
  readonly outputBytes: number;
  /** From navigation to the first page of the output shown. */
  readonly outputFirstMs: number;
  /** From a click on "Last" to the last page shown. */
  readonly outputLastMs: number;
  /** The longest the page's main thread was busy at once while it did both. */
  readonly longestTaskMs: number;
}

/** Stores `count` bids of `owner` straight into the store: what 10,000 past jobs leave behind. */
export async function seedExecutions(core: Core, owner: string, count: number): Promise<void> {
  const start = Date.now() - count * 1000;
  for (let i = 0; i < count; i++) {
    const id = core.ids.next();
    await core.store.create(offeredExecution(id, new Date(start + i * 1000).toISOString(), owner));
  }
}

async function withToken(browser: Browser, url: string, token: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Signed in already, as a second visit in the same session would be. (Page scripts are text:
  // this file is type-checked for Node, which has no DOM.)
  await context.addInitScript(`sessionStorage.setItem('ferry.token', ${JSON.stringify(token)});`);
  const page = await context.newPage();
  // Long tasks as the browser itself counts them, from the first script on.
  await page.addInitScript(`
    window.ferryLongTasks = [];
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) window.ferryLongTasks.push(entry.duration);
    }).observe({ type: 'longtask', buffered: true });
  `);
  await page.goto(`${url}/favicon.svg`);
  return page;
}

const longest = (page: Page): Promise<number> => page.evaluate('Math.max(0, ...window.ferryLongTasks)');
const pageClock = (page: Page): Promise<number> => page.evaluate('performance.now()');

/**
 * Measures both pages. The list is read as the caller whose token is given; the big output is
 * made by a job that `client` submits (it writes `outputBytes` to stdout).
 */
export async function measureDashboard(options: {
  readonly browser: Browser;
  readonly url: string;
  readonly token: string;
  readonly client: FerryClient;
  readonly image: string;
  readonly stored: number;
  readonly outputBytes: number;
  readonly waitDone: (id: string) => Promise<Execution>;
}): Promise<DashboardLoad> {
  const { browser, url, token } = options;
  const list = await withToken(browser, url, token);
  await list.goto(`${url}/#/`);
  await list.locator('table.executions tbody tr').first().waitFor({ timeout: 30_000 });
  const listMs = await pageClock(list);
  const listTasks = await longest(list);
  await list.context().close();

  const job = (
    await options.client.json<Execution>('POST', '/v1/jobs', {
      image: options.image,
      command: [
        'sh',
        '-c',
        `yes 'a line of output from a job that writes a lot' | head -c ${options.outputBytes}`,
      ],
      resources: { cpu: 1, memory: 256 },
      outputLimits: { stdoutBytes: options.outputBytes, keep: 'head+tail' },
    })
  ).body;
  const done = await options.waitDone(job.id);
  if (done.result?.stdout.storedBytes !== options.outputBytes) {
    throw new Error(
      `the big job stored ${done.result?.stdout.storedBytes} bytes, not ${options.outputBytes}`,
    );
  }
  const output = await withToken(browser, url, token);
  await output.goto(`${url}/#/executions/${job.id}`);
  const stdout = output.locator('pre[data-stream="stdout"]');
  await stdout.getByText('a line of output').first().waitFor({ timeout: 30_000 });
  const outputFirstMs = await pageClock(output);
  const before = await output.locator('section.log[aria-label="stdout"] .meta').textContent();
  if (!before?.startsWith('bytes 0–'))
    throw new Error(`the job page did not open at the first page: ${before}`);
  const clicked = await pageClock(output);
  await output
    .getByRole('navigation', { name: 'stdout pages' })
    .getByRole('button', { name: 'Last' })
    .click();
  // Polled from here: the page's policy forbids evaluating text in it, as waitForFunction would.
  const meta = output.locator('section.log[aria-label="stdout"] .meta');
  while ((await meta.textContent()) === before) await new Promise((resolve) => setTimeout(resolve, 10));
  const outputLastMs = (await pageClock(output)) - clicked;
  const outputTasks = await longest(output);
  await output.context().close();
  return {
    stored: options.stored,
    listMs,
    outputBytes: options.outputBytes,
    outputFirstMs,
    outputLastMs,
    longestTaskMs: Math.max(listTasks, outputTasks),
  };
}
