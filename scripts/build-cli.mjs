// Builds the command line's client commands into one ESM file, dist/cli/ferry.mjs, so `ferry`
// starts without compiling TypeScript (bin/ferry.js falls back to the sources through tsx when
// the build is missing or older than any of its inputs, and always for `serve`, `emulate` and
// `dashboard`).
// Run by `npm ci` (postinstall); without esbuild (dev dependencies omitted) it does nothing.
import fs from 'node:fs';

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.log('ferry: esbuild is not installed; the CLI runs from its sources');
  process.exit(0);
}
const started = Date.now();
const result = await esbuild.build({
  entryPoints: ['cli/main.ts'],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  outfile: 'dist/cli/ferry.mjs',
  metafile: true,
  logLevel: 'warning',
  plugins: [
    {
      name: 'packages-stay-installed',
      setup(build) {
        // Packages load from node_modules as usual; Ferry's own modules (#shared/…) are bundled.
        build.onResolve({ filter: /^[^./#]/ }, (args) => ({ path: args.path, external: true }));
        // The servers and the emulated stack run from the sources (bin/ferry.js sends them there).
        build.onResolve({ filter: /runtime\/local\.ts$|\/emulate\.ts$|^\.\/dashboard\.ts$/ }, (args) => ({
          path: args.path,
          external: true,
        }));
      },
    },
  ],
});
const inputs = Object.keys(result.metafile.inputs).filter((input) => !input.includes('node_modules'));
fs.writeFileSync('dist/cli/inputs.json', `${JSON.stringify({ builtAt: started, inputs }, null, 2)}\n`);
console.log(`ferry: built dist/cli/ferry.mjs from ${inputs.length} sources`);
