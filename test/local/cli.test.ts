// The `ferry` command line as a user runs it: a child process talking to a real server
// on the process backend. Exit codes and what reaches stdout and stderr are the contract.
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Execution } from '../../shared/domain/execution.ts';
import { LOG_INLINE_MAX_BYTES } from '../../shared/http/openapi.ts';
import { type Run, runFerry } from '../support/cli.ts';
import { startServer, type TestServer, tempDir } from '../support/server.ts';

let server: TestServer;

/** Runs `ferry ARGS…` with only the environment a user would have, plus FERRY_URL. */
const ferry = (args: string[], url: string = server.url): Promise<Run> => runFerry(args, url);

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', () => resolve()));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

beforeAll(async () => {
  server = await startServer({ FERRY_BACKEND: 'process' });
});

afterAll(async () => {
  await server?.close();
});

describe('ferry submit --wait', () => {
  test("prints exactly the job's output and exits 0", async () => {
    const run = await ferry(['submit', '--wait', '--image', 'x/y:1', '--', 'echo', 'hello']);

    expect(run).toMatchObject({ code: 0, stdout: 'hello\n', stderr: '' });
  });

  test("exits with the job's own exit code", async () => {
    const run = await ferry([
      'submit',
      '--wait',
      '--image',
      'x/y:1',
      '--',
      'sh',
      '-c',
      'echo oops >&2; exit 3',
    ]);

    expect(run.code).toBe(3);
    expect(run.stdout).toBe('');
    // The job's stderr, then Ferry's summary line.
    expect(run.stderr).toMatch(
      /^oops\nferry: (ex_\w+) COMPLETED with exit code 3; `ferry result \1` shows the result\n$/,
    );
  });

  test('a program that does not exist exits 125 and names it', async () => {
    const run = await ferry(['submit', '--wait', '--image', 'x/y:1', '--', 'ferry-no-such-program']);

    expect(run.code).toBe(125);
    expect(run.stderr).toMatch(/FAILED: .*ferry-no-such-program/);
  });

  test('--json prints the finished execution as parseable JSON', async () => {
    const run = await ferry(['submit', '--wait', '--json', '--image', 'x/y:1', '--', 'echo', 'hello']);

    expect(run.code).toBe(0);
    const execution = JSON.parse(run.stdout) as Execution;
    expect(execution).toMatchObject({
      state: 'COMPLETED',
      exitCode: 0,
      spec: { command: ['echo', 'hello'] },
    });
  });
});

describe('output over what one response carries', () => {
  // Each line differs, so a lost, repeated or reordered piece shows.
  const LINES = 400_000;
  const expected = Array.from({ length: LINES }, (_, i) => `${i + 1}\n`).join('');

  test('the logs read redirects to the download link, and the CLI prints every byte', async () => {
    expect(Buffer.byteLength(expected)).toBeGreaterThan(LOG_INLINE_MAX_BYTES);
    const job = [
      '--image',
      'x/y:1',
      '--stdout-limit',
      String(8 * 1024 * 1024),
      '--',
      'seq',
      '1',
      String(LINES),
    ];

    const waited = await ferry(['submit', '--wait', ...job]);
    const submitted = await ferry(['submit', ...job]);
    const submittedId = submitted.stdout.trim();
    await ferry(['wait', submittedId]);
    const logs = await ferry(['logs', submittedId]);
    const raw = await fetch(`${server.url}/v1/executions/${submittedId}/logs?stream=stdout`, {
      redirect: 'manual',
    });
    const location = raw.headers.get('location') ?? '';
    const followed = await fetch(location);

    expect(waited.code).toBe(0);
    expect(waited.stdout.length).toBe(expected.length);
    expect(waited.stdout === expected).toBe(true);
    expect(logs.code).toBe(0);
    expect(logs.stdout.length).toBe(expected.length);
    expect(logs.stdout === expected).toBe(true);
    expect(raw.status).toBe(303);
    expect(raw.headers.get('ferry-stored-bytes')).toBe(String(expected.length));
    expect(location).toMatch(/\/objects\//);
    expect(followed.status).toBe(200);
    expect((await followed.text()) === expected).toBe(true);
  });

  test('a stream under the threshold still comes in the response itself', async () => {
    const submitted = await ferry(['submit', '--image', 'x/y:1', '--', 'echo', 'small']);
    const id = submitted.stdout.trim();
    await ferry(['wait', id]);

    const raw = await fetch(`${server.url}/v1/executions/${id}/logs?stream=stdout`, { redirect: 'manual' });

    expect(raw.status).toBe(200);
    expect(await raw.text()).toBe('small\n');
  });
});

describe('other commands', () => {
  test('submit without --wait prints the id, and status --json shows it', async () => {
    const submitted = await ferry(['submit', '--image', 'x/y:1', '--', 'true']);
    const id = submitted.stdout.trim();

    const status = await ferry(['status', '--json', id]);

    expect(submitted.code).toBe(0);
    expect(id).toMatch(/^ex_[0-9a-z]{26}$/);
    expect(status.code).toBe(0);
    expect((JSON.parse(status.stdout) as Execution).id).toBe(id);
  });

  test('node --json reports the process backend', async () => {
    const run = await ferry(['node', '--json']);

    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ backend: 'process', isolated: false });
  });

  test('a bid Ferry declines exits 1 and says why', async () => {
    const run = await ferry(['bid', '--image', 'x/y:1', '--cpu', '1000', '--', 'true']);

    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^declined: cpu 1000 vCPU asked/);
  });
});

describe('data in and out', () => {
  test('--input and --output carry files; result --download saves them, checked, and refuses a full directory', async () => {
    const dir = await tempDir('ferry-cli-data-');
    const local = path.join(dir, 'table.csv');
    await fsp.writeFile(local, 'a,b\n1,2\n');

    const run = await ferry([
      'submit',
      '--wait',
      '--image',
      'x/y:1',
      '--input',
      `@${local}:/in/table.csv`,
      '--output',
      '/out/sum.txt',
      '--output',
      '/out/parts/',
      '--',
      'sh',
      '-c',
      'wc -l < in/table.csv > out/sum.txt; mkdir -p out/parts; echo p1 > out/parts/1.txt; echo done',
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('done\n');
    const id = (await ferry(['ls', '--json', '--limit', '1'])).stdout.match(/"id": "(ex_\w+)"/)?.[1] ?? '';

    const shown = await ferry(['result', id]);
    expect(shown.stdout).toContain('  output    sum.txt (/out/sum.txt): 2 B stored');
    expect(shown.stdout).toContain('  output    parts (/out/parts/): 1 files, 3 B stored');

    const target = path.join(dir, 'saved');
    const saved = await ferry(['result', id, '--download', target]);
    expect(saved.code, saved.stderr).toBe(0);
    expect(saved.stdout).toBe(`saved 5 files (10 B) to ${target}, each checked against its SHA-256\n`);
    expect(await fsp.readFile(path.join(target, 'outputs', 'sum.txt'), 'utf8')).toBe('2\n');
    expect(await fsp.readFile(path.join(target, 'outputs', 'parts', '1.txt'), 'utf8')).toBe('p1\n');
    expect(await fsp.readFile(path.join(target, 'stdout'), 'utf8')).toBe('done\n');

    const again = await ferry(['result', id, '--download', target]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/^ferry: --download .*saved: the directory is not empty; name a new one/);
    expect((await fsp.readdir(dir)).sort()).toEqual(['saved', 'table.csv']);
  });
});

describe('a bid, then accept', () => {
  test('accept --wait runs the job to its end, prints its output and exits with its code', async () => {
    const bid = await ferry(['bid', '--json', '--image', 'x/y:1', '--', 'sh', '-c', 'echo from-bid; exit 3']);
    const { executionId } = JSON.parse(bid.stdout) as { executionId: string };

    const run = await ferry(['accept', '--wait', executionId]);

    expect(run.code).toBe(3);
    expect(run.stdout).toBe('from-bid\n');
    expect(run.stderr).toContain(`ferry: ${executionId} COMPLETED with exit code 3`);
  });

  test('accept --follow prints the output as it comes; --json with it is refused', async () => {
    const bid = await ferry(['bid', '--json', '--image', 'x/y:1', '--', 'echo', 'followed']);
    const { executionId } = JSON.parse(bid.stdout) as { executionId: string };

    const refused = await ferry(['accept', '--json', '--follow', executionId]);
    const run = await ferry(['accept', '--follow', executionId]);

    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^ferry: --json and --follow do not mix/);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('followed\n');
  });
});

describe('decisions with a justification', () => {
  test('reject --justification keeps it, and status prints it', async () => {
    const bid = await ferry(['bid', '--json', '--image', 'x/y:1', '--', 'true']);
    const { executionId } = JSON.parse(bid.stdout) as { executionId: string };

    const rejected = await ferry(['reject', executionId, '--justification', 'over budget this week']);
    const status = await ferry(['status', executionId]);

    expect(rejected.code, rejected.stderr).toBe(0);
    expect(rejected.stdout).toBe(`${executionId} BID_REJECTED\n`);
    expect(status.stdout).toMatch(
      /BID_REJECTED {2}\(rejected by the caller\)\n\s+justification: over budget this week\n/,
    );
  });

  test('result --reject --justification keeps it on the review, and status prints it', async () => {
    const submitted = await ferry(['submit', '--image', 'x/y:1', '--', 'echo', 'wrong']);
    const id = submitted.stdout.trim();
    expect((await ferry(['wait', id])).code).toBe(0);

    const reviewed = await ferry(['result', id, '--reject', '--justification', 'the output is wrong']);
    const status = await ferry(['status', '--json', id]);
    const human = await ferry(['status', id]);

    expect(reviewed.code, reviewed.stderr).toBe(0);
    expect(reviewed.stdout).toBe(`${id} result REJECTED\n`);
    const execution = JSON.parse(status.stdout) as Execution;
    expect(execution.result).toMatchObject({ review: 'REJECTED', justification: 'the output is wrong' });
    expect(human.stdout).toMatch(/COMPLETED {2}result REJECTED\n\s+justification: the output is wrong\n/);
  });

  test('--justification without a decision is a usage error', async () => {
    const run = await ferry(['result', `ex_${'0'.repeat(26)}`, '--justification', 'why']);

    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--justification goes with --accept or --reject/);
  });
});

describe('errors', () => {
  test('a usage error exits 2 with one line saying what is wrong', async () => {
    const run = await ferry(['submit', '--wait', '--', 'echo', 'hello']);

    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(run.stderr).toMatch(/^ferry: --image is required.*\(see `ferry submit --help`\)\n$/);
  });

  test('a non-numeric number option is a usage error, refused before any request', async () => {
    const run = await ferry(['submit', '--image', 'x/y:1', '--cpu', 'lots', '--', 'true']);

    expect(run.code).toBe(2);
    expect(run.stderr).toBe('ferry: --cpu must be a number, got lots (see `ferry submit --help`)\n');
  });

  test('an unknown option is a usage error', async () => {
    const run = await ferry(['submit', '--bogus', '--image', 'x/y:1', '--', 'true']);

    expect(run.code).toBe(2);
    expect(run.stderr.split('\n')[0]).toMatch(/^ferry: .*--bogus/);
  });

  test('an unreachable server gives a one-line error and exit 1', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;

    const run = await ferry(['submit', '--wait', '--image', 'x/y:1', '--', 'echo', 'hello'], url);

    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(new RegExp(`^ferry: cannot reach Ferry at ${url}[^\\n]*\\n$`));
  });

  test('a spec the server refuses exits 1 with its reason', async () => {
    const run = await ferry(['submit', '--image', 'Not An Image', '--', 'true']);

    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^ferry: invalid job spec: image: /);
  });

  test('an unknown execution exits 1 with a not-found message', async () => {
    const run = await ferry(['status', `ex_${'0'.repeat(26)}`]);

    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^ferry: execution ex_0{26} does not exist\n$/);
  });
});
