// Builds the dashboard (web/) into dist/web, which `ferry serve` and `ferry dashboard` serve.
// Run by `npm ci` (postinstall) and `npm run build:web`; without Vite (dev dependencies
// omitted) it does nothing, and the server says how to build it when asked for the pages.
let vite;
try {
  vite = await import('vite');
} catch {
  console.log('ferry: vite is not installed; the dashboard is not built');
  process.exit(0);
}
const started = Date.now();
await vite.build({ configFile: 'web/vite.config.ts' });
console.log(`ferry: built the dashboard in dist/web (${Date.now() - started} ms)`);
