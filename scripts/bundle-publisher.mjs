// Bundles the publisher (runner/publisher-main.ts and what it imports, AWS SDK included)
// into one ESM file for Ferry's runner image: node runs it with nothing else installed.
import { build } from 'esbuild';

const outfile = process.argv[2] ?? 'dist/runner/publisher.mjs';
await build({
  entryPoints: ['runner/publisher-main.ts'],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  minify: true,
  keepNames: true,
  outfile,
  // Some bundled packages are CommonJS and call require().
  banner: {
    js: "import { createRequire as __ferryRequire } from 'node:module'; const require = __ferryRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
console.log(outfile);
