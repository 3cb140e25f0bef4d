// The dashboard's browser tests open their pages the same way: a fresh context at a desktop
// size, with every Content-Security-Policy violation and script error the page reports kept in
// `faults`, which a test must end with empty.
import type { Browser, Page } from 'playwright-core';

export async function openWatchedPage(browser: Browser, faults: string[]): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) {
      faults.push(message.text());
    }
  });
  page.on('pageerror', (error) => faults.push(`page error: ${error.message}`));
  return page;
}
