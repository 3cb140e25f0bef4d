#!/usr/bin/env node
// Ferry's command line. The client commands run from dist/cli/ferry.mjs, built by `npm ci`
// (scripts/build-cli.mjs), when it is there and newer than every source it was built from;
// otherwise, and for `serve`, `emulate` and `dashboard` (which serve files of the checkout), the
// TypeScript sources run through tsx.
import fs from 'node:fs';

// A reader that stops early (`ferry ls | head`) closes the pipe: the rest is not wanted, and
// that is no error, as for any Unix tool.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
}

const root = new URL('..', import.meta.url);
const args = process.argv.slice(2);

async function built() {
  try {
    const { builtAt, inputs } = JSON.parse(fs.readFileSync(new URL('dist/cli/inputs.json', root), 'utf8'));
    for (const input of inputs) {
      if (fs.statSync(new URL(input, root)).mtimeMs > builtAt) return undefined;
    }
    return await import(new URL('dist/cli/ferry.mjs', root).href);
  } catch {
    return undefined;
  }
}

async function fromSources() {
  const { register } = await import('tsx/esm/api');
  register();
  return import('../cli/main.ts');
}

const runsFromSources = ['serve', 'emulate', 'dashboard'].some((verb) => args.includes(verb));
const cli = (runsFromSources ? undefined : await built()) ?? (await fromSources());
process.exitCode = await cli.main(args);
