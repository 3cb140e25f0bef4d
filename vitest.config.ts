import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    allowOnly: false,
    globalSetup: ['test/global-setup.ts'],
    // The black-box suites share one Docker Engine; running files one at a time keeps
    // their concurrency assertions about Ferry, not about a saturated 2-core host.
    fileParallelism: false,
  },
});
