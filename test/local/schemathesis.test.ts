// The OpenAPI document says what the server does: schemathesis generates requests from it
// (valid and invalid ones) against a real local server on the Docker backend, and every answer
// must match the document (status, content type, headers, body schema) and none may be a 5xx.
// The server allows only the offline test image and 5-second jobs, and requires a bearer token.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { FerryClient } from '../../cli/client.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import { documentedRoutes } from '../../shared/http/openapi.ts';
import { removeContainersOf } from '../support/docker.ts';
import { startServer, type TestServer } from '../support/server.ts';

const SCHEMATHESIS = path.resolve('.venv/bin/schemathesis');
const CONFIG = path.resolve('test/local/schemathesis.toml');
const CHECKS = [
  'not_a_server_error',
  'status_code_conformance',
  'content_type_conformance',
  'response_headers_conformance',
  'response_schema_conformance',
];
const TOKEN = 'schemathesis-token-0123456789';

const installed = fs.existsSync(SCHEMATHESIS);
const dockerAvailable = inject('dockerAvailable');
if (process.env.CI === 'true' && !installed) {
  throw new Error(
    `CI=true but schemathesis is not installed at ${SCHEMATHESIS}: .venv/bin/pip install -r test/local/requirements.txt`,
  );
}
if (process.env.CI === 'true' && !dockerAvailable) {
  throw new Error('CI=true but no Docker Engine is available: the schemathesis suite must run');
}
if (!installed) {
  console.warn(
    `[ferry tests] schemathesis is not installed (${SCHEMATHESIS}); skipping the OpenAPI conformance run. ` +
      'Install it with: .venv/bin/pip install -r test/local/requirements.txt',
  );
}

function run(command: string, args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1' },
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
}

describe.skipIf(!installed || !dockerAvailable)('schemathesis against the local server', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startServer({
      FERRY_BACKEND: 'docker',
      FERRY_TOKEN: TOKEN,
      FERRY_IMAGE_ALLOW: 'ferry-test:busybox',
      FERRY_MAX_TIMEOUT_SECONDS: '5',
      FERRY_MAX_CONCURRENCY: '2',
      FERRY_MAX_CPU: '1',
      FERRY_MAX_MEMORY: '256MiB',
      FERRY_MAX_OUTPUT_BYTES: '1MiB',
    });
  });

  afterAll(async () => {
    if (server === undefined) return;
    // Whatever jobs the generated requests started: their containers go with the test.
    const ids: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await new FerryClient(server.url, TOKEN).json<{ items: Execution[]; nextCursor?: string }>(
        'GET',
        `/v1/executions?limit=500${cursor === undefined ? '' : `&cursor=${cursor}`}`,
      );
      ids.push(...page.body.items.map((e) => e.id));
      cursor = page.body.nextCursor;
    } while (cursor !== undefined);
    await server.close();
    await removeContainersOf(ids);
    await fsp.rm(server.dataDir, { recursive: true, force: true });
  });

  it('finds no server error and no answer the document does not describe', async () => {
    const { code, output } = await run(SCHEMATHESIS, [
      '--config-file',
      CONFIG,
      'run',
      `${server.url}/v1/openapi.json`,
      '--header',
      `Authorization: Bearer ${TOKEN}`,
      '--checks',
      CHECKS.join(','),
      '--max-examples',
      '15',
      '--generation-database',
      'none',
      '--workers',
      '2',
      '--no-color',
    ]);
    // Its closing banner ("=== 2 warnings in 58s ===") reads like a test runner's last line
    // to whoever scans the log: keep the summary, drop the banners.
    const summary = output
      .slice(output.lastIndexOf('SUMMARY'))
      .split('\n')
      .filter((line) => !/^=+ .* =+$/.test(line.trim()))
      .join('\n');
    console.log(`schemathesis ${summary}`);
    expect(code, output).toBe(0);
    // Every operation but GET /v1/openapi.json, which schemathesis leaves out when it loaded the
    // document from it; test/unit/openapi.test.ts reads it. The TES API's are among them, and so
    // is POST /v1/executions/{id}/uploads: the local server answers it 404 (its backends store
    // results themselves), which the document says.
    const operations = documentedRoutes().length - 1;
    expect(documentedRoutes()).toEqual(
      expect.arrayContaining([
        'GET /ga4gh/tes/v1/service-info',
        'GET /ga4gh/tes/v1/tasks',
        'POST /ga4gh/tes/v1/tasks',
        'GET /ga4gh/tes/v1/tasks/{id}',
        'POST /ga4gh/tes/v1/tasks/{id}:cancel',
      ]),
    );
    expect(output).toMatch(new RegExp(`Selected: ${operations}/${operations}\\b`));
    expect(output).toMatch(new RegExp(`Tested: ${operations}\\b`));
    expect(output).toMatch(/\d+ generated, \d+ passed/);
    expect(output).not.toMatch(/\d+ failed/);
  }, 300_000);
});
