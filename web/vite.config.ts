// The dashboard's build: static assets in dist/web, which `ferry serve` and `ferry dashboard`
// serve themselves. No inline script or style and no data: URLs, so the pages run under a
// Content-Security-Policy that allows Ferry's own origin only.
import path from 'node:path';
import { defineConfig } from 'vite';

const here = import.meta.dirname;

export default defineConfig({
  root: here,
  base: '/',
  logLevel: 'warn',
  build: {
    outDir: path.join(here, '..', 'dist', 'web'),
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    target: 'es2022',
  },
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
});
