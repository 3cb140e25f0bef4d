// The dashboard under load, in Debian's Chromium through playwright-core: a server with the
// Docker backend and a token, 10,000 executions stored for the caller, and a job that writes
// 100 MB to stdout; the same measurement the browser test asserts on (test/support/dashboard-load.ts).

import { createHash } from 'node:crypto';
import { chromium } from 'playwright-core';
import { FerryClient } from '../cli/client.ts';
import { type DashboardLoad, measureDashboard, seedExecutions } from '../test/support/dashboard-load.ts';
import { startServer, waitDone } from '../test/support/server.ts';

export const DASHBOARD_EXECUTIONS = 10_000;
export const DASHBOARD_OUTPUT_BYTES = 100 * 1000 * 1000;

export async function benchDashboard(image: string): Promise<DashboardLoad> {
  const token = 'bench-dashboard-token';
  const server = await startServer({ FERRY_TOKEN: token });
  const browser = await chromium.launch({
    executablePath: process.env.FERRY_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  try {
    const owner = `local:token/${createHash('sha256').update(token).digest('hex').slice(0, 16)}`;
    await seedExecutions(server.server.core, owner, DASHBOARD_EXECUTIONS);
    const client = new FerryClient(server.url, token);
    return await measureDashboard({
      browser,
      url: server.url,
      token,
      client,
      image,
      stored: DASHBOARD_EXECUTIONS,
      outputBytes: DASHBOARD_OUTPUT_BYTES,
      waitDone: (id) => waitDone(client, id, 300),
    });
  } finally {
    await browser.close();
    await server.close();
  }
}
