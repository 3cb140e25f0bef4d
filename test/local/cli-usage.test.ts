// How the `ferry` command line answers a person who got something wrong or wants help: the
// real binary, a real server (the process backend) for the cases that reach it. Every usage
// error is one line on stderr naming the mistake and where to read more, exit 2, and sends
// nothing to the server.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Execution } from '../../shared/domain/execution.ts';
import { FERRY_VERSION } from '../../shared/version.ts';
import { FERRY, ferryInTerminal, type Run, runFerry } from '../support/cli.ts';
import { startServer, type TestServer, tempDir } from '../support/server.ts';

let server: TestServer;
let dir: string;

const ferry = (args: string[]): Promise<Run> => runFerry(args, server.url);

/** How many executions the server holds: a usage error must not have created one. */
async function executionCount(): Promise<number> {
  const reply = await server.client.json<{ items: Execution[] }>('GET', '/v1/executions?limit=100');
  return reply.body.items.length;
}

beforeAll(async () => {
  server = await startServer({ FERRY_BACKEND: 'process' });
  dir = await tempDir();
});

afterAll(async () => {
  await server?.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('help and version', () => {
  test('--version prints the version and exits 0', async () => {
    const run = await ferry(['--version']);

    expect(run).toEqual({ code: 0, stdout: `ferry ${FERRY_VERSION}\n`, stderr: '' });
  });

  test('each command has its own help, with its options and examples', async () => {
    const submit = await ferry(['submit', '--help']);
    const logs = await ferry(['help', 'logs']);

    expect(submit.code).toBe(0);
    expect(submit.stdout).toMatch(/^Usage: ferry submit \[options\] -- COMMAND \[ARG\.\.\.\]/);
    expect(submit.stdout).toContain('--timeout <duration>');
    expect(submit.stdout).toContain('--gpu <count>');
    expect(submit.stdout).toMatch(/Examples:\n {2}\$ ferry submit --wait --image alpine:3\.20 -- echo hello/);
    // Options every command takes are listed too.
    expect(submit.stdout).toContain('--url <url>');
    expect(logs.code).toBe(0);
    expect(logs.stdout).toMatch(/^Usage: ferry logs \[options\] <id>/);
    expect(logs.stdout).toContain('-f, --follow');
    expect(logs.stdout).not.toContain('--image');
  });

  test('a reader that is gone (ferry --help | true) ends it quietly, not with a crash', async () => {
    const child = spawn(process.execPath, [FERRY, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    // The pipe closed before anything was read, as `true` or an early `head` leaves it.
    child.stdout.destroy();

    const [code] = await once(child, 'close');

    expect(stderr).toBe('');
    expect(code).toBe(0);
  });

  test('no command at all prints the overview on stderr and exits 2', async () => {
    const run = await ferry([]);

    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^Usage: ferry <command> \[options\]/);
    expect(run.stderr).toContain('submit');
  });
});

describe('usage errors: one line, the mistake named, exit 2, nothing sent', () => {
  const cases: { name: string; args: string[]; message: RegExp }[] = [
    {
      name: 'a misspelt command',
      args: ['sumbit', '--image', 'x/y:1', '--', 'true'],
      message: /^ferry: unknown command 'sumbit' \(did you mean submit\?\) \(see `ferry --help`\)$/,
    },
    {
      name: 'a misspelt option',
      args: ['submit', '--img', 'x/y:1', '--', 'true'],
      message: /^ferry: unknown option '--img' \(did you mean --image\?\) \(see `ferry submit --help`\)$/,
    },
    {
      name: 'a command given without --',
      args: ['submit', '--image', 'x/y:1', 'ls', '-la'],
      message:
        /^ferry: the job's command goes after `--`: ferry submit \[options\] -- ls -la \(see `ferry submit --help`\)$/,
    },
    {
      name: 'a one-word command given without --',
      args: ['bid', '--image', 'x/y:1', 'true'],
      message: /^ferry: the job's command goes after `--`: ferry bid \[options\] -- true/,
    },
    {
      name: 'an option the command does not have',
      args: ['ls', '--cpu', '2'],
      message: /^ferry: unknown option '--cpu' \(see `ferry ls --help`\)$/,
    },
    {
      name: 'an option another command has',
      args: ['reject', 'ex_00000000000000000000000000', '--wait'],
      message: /^ferry: unknown option '--wait'/,
    },
    {
      name: 'a hexadecimal timeout',
      args: ['submit', '--image', 'x/y:1', '--timeout', '0x10', '--', 'true'],
      message: /^ferry: --timeout must be a duration \(90, 90s, 10m, 1h30m\), got 0x10/,
    },
    {
      name: 'a hexadecimal cpu',
      args: ['submit', '--image', 'x/y:1', '--cpu', '0x10', '--', 'true'],
      message: /^ferry: --cpu must be a number, got 0x10/,
    },
    {
      name: 'a network that does not exist',
      args: ['submit', '--image', 'x/y:1', '--network', 'host', '--', 'true'],
      message:
        /^ferry: option '--network <mode>' argument 'host' is invalid\. Allowed choices are none, egress\./,
    },
    {
      name: 'a dashboard for a server that shows its own',
      args: ['dashboard'],
      message:
        /^ferry: ferry dashboard is for a Ferry deployed on AWS, and http:\/\/127\.0\.0\.1:\d+ is not an API Gateway URL: .*\(see `ferry dashboard --help`\)$/,
    },
    {
      name: 'a dashboard port that is not a number',
      args: ['dashboard', '--sigv4', '--region', 'us-east-1', '--port', '80x'],
      message: /^ferry: --port must be a port number, not 80x \(see `ferry dashboard --help`\)$/,
    },
    {
      name: 'a missing execution id',
      args: ['status'],
      message: /^ferry: missing required argument 'id' \(see `ferry status --help`\)$/,
    },
  ];

  test.each(cases)('$name', async ({ args, message }) => {
    const before = await executionCount();

    const run = await ferry(args);

    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr.endsWith('\n')).toBe(true);
    expect(run.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(run.stderr.trimEnd()).toMatch(message);
    expect(await executionCount()).toBe(before);
  });

  test.each([
    ['null', 'null'],
    ['[]', 'an array'],
    ['"spec"', 'a string'],
  ])('a --file holding %s is refused: it must hold a JSON object', async (content, held) => {
    const file = path.join(dir, `spec-${held.replace(/\s/g, '-')}.json`);
    await fsp.writeFile(file, content);

    const run = await ferry(['submit', '--file', file]);

    expect(run.code).toBe(2);
    expect(run.stderr).toBe(
      `ferry: the job spec ${file} must hold a JSON object, not ${held} (see \`ferry submit --help\`)\n`,
    );
  });
});

describe('what a person means', () => {
  test('--timeout takes units: 10m is 600 seconds, 1h30m is 5400', async () => {
    const ten = await ferry(['bid', '--json', '--image', 'x/y:1', '--timeout', '10m', '--', 'true']);
    const mixed = await ferry(['bid', '--json', '--image', 'x/y:1', '--timeout', '1h30m', '--', 'true']);

    expect(ten.code).toBe(0);
    const tenId = (JSON.parse(ten.stdout) as { executionId: string }).executionId;
    const mixedId = (JSON.parse(mixed.stdout) as { executionId: string }).executionId;
    const spec = async (id: string) =>
      (await server.client.json<Execution>('GET', `/v1/executions/${id}`)).body.spec.timeoutSeconds;
    expect(await spec(tenId)).toBe(600);
    expect(await spec(mixedId)).toBe(5400);
  });

  test('--gpu asks for GPUs, and a host without them declines naming what was asked', async () => {
    const run = await ferry(['bid', '--image', 'x/y:1', '--gpu', '1', '--', 'true']);

    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^declined: .*GPU/i);
  });

  test('a spec file with `cmd` for `command` gets the server’s field-by-field answer', async () => {
    const file = path.join(dir, 'cmd.json');
    await fsp.writeFile(file, JSON.stringify({ image: 'x/y:1', cmd: ['true'] }));

    const run = await ferry(['submit', '--file', file]);

    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/cmd/);
    expect(run.stderr).toMatch(/command/);
  });
});

describe('what a person sees', () => {
  test('a job that exits non-zero ends with a summary line on stderr, and its code', async () => {
    const run = await ferry(['submit', '--wait', '--image', 'x/y:1', '--', 'sh', '-c', 'echo out; exit 3']);

    expect(run.code).toBe(3);
    expect(run.stdout).toBe('out\n');
    expect(run.stderr).toMatch(
      /^ferry: (ex_\w+) COMPLETED with exit code 3; `ferry result \1` shows the result\n$/,
    );
  });

  test('logs of a job that printed nothing says so on stderr', async () => {
    const submitted = await ferry(['submit', '--image', 'x/y:1', '--', 'true']);
    const id = submitted.stdout.trim();
    await ferry(['wait', id]);

    const logs = await ferry(['logs', id]);
    const json = await ferry(['logs', id, '--json']);

    expect(logs).toEqual({ code: 0, stdout: '', stderr: `ferry: ${id} printed nothing on stdout\n` });
    expect(JSON.parse(json.stdout)).toEqual({
      executionId: id,
      stream: 'stdout',
      bytes: 0,
      encoding: 'utf8',
      data: '',
    });
  });

  test('logs --json carries the bytes, base64 when they are not text', async () => {
    const submitted = await ferry([
      'submit',
      '--wait',
      '--json',
      '--image',
      'x/y:1',
      '--',
      'printf',
      '\\377\\000ok',
    ]);
    const id = (JSON.parse(submitted.stdout) as Execution).id;

    const json = await ferry(['logs', id, '--json']);

    expect(JSON.parse(json.stdout)).toEqual({
      executionId: id,
      stream: 'stdout',
      bytes: 4,
      encoding: 'base64',
      data: Buffer.from([0xff, 0x00, 0x6f, 0x6b]).toString('base64'),
    });
  });

  test('--json never mixes with the job’s output: submit --json --follow is refused', async () => {
    const run = await ferry(['submit', '--json', '--follow', '--image', 'x/y:1', '--', 'echo', 'hi']);

    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^ferry: --json and --follow do not mix/);
  });

  test('node reads as text, and as JSON with --json', async () => {
    const human = await ferry(['node']);
    const json = await ferry(['node', '--json']);

    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(
      /^ferry \S+, process backend \(jobs are NOT isolated\)\n {2}running +\d+ of at most \d+ jobs; \d+ queued\n/,
    );
    expect(JSON.parse(json.stdout)).toMatchObject({ backend: 'process', capacity: expect.any(Object) });
  });

  test('a queued job’s place and what it waits for: in the wait line, in status, and while following', async () => {
    const node = (await server.client.json<{ capacity: { cpu: number } }>('GET', '/v1/node')).body;
    const blocker = await ferry([
      'submit',
      '--cpu',
      String(node.capacity.cpu),
      '--image',
      'x/y:1',
      '--',
      'sleep',
      '30',
    ]);
    const blockerId = blocker.stdout.trim();
    await server.client.json('GET', `/v1/executions/${blockerId}/wait?state=RUNNING&timeoutSeconds=20`);
    const first = (
      await ferry(['submit', '--cpu', '1', '--image', 'x/y:1', '--', 'echo', 'first'])
    ).stdout.trim();
    const waiting = ferryInTerminal(
      ['submit', '--wait', '--cpu', '1', '--image', 'x/y:1', '--', 'true'],
      server.url,
    );
    const following = ferryInTerminal(['logs', '-f', first], server.url);

    const needs = String.raw`needs 1 vCPU, 1024 MiB; 0 vCPU, \d+ MiB and \d+ of \d+ slots free`;
    await expect
      .poll(() => waiting.screen(), { timeout: 20_000 })
      .toMatch(new RegExp(`ex_\\w+ QUEUED #2 of 2 in line, waiting for capacity: ${needs} \\d+s`));
    await expect
      .poll(() => following.screen(), { timeout: 20_000 })
      .toMatch(new RegExp(`ferry: ${first} QUEUED #1 of 2 in line, waiting for capacity: ${needs}\r?\n`));
    const status = await ferry(['status', first]);
    expect(status.stdout).toMatch(
      new RegExp(`\n {2}queue {5}#1 of 2 in line, waiting for capacity: ${needs}\n?$`),
    );

    await ferry(['cancel', blockerId]);
    expect(await waiting.closed).toBe(0);
    expect(await following.closed).toBe(0);
    expect(following.screen()).toContain('first');
  });

  test('in a terminal, the wait line shows the state, and Ctrl-C says the job goes on and how to stop it', async () => {
    // `script` gives the command a terminal; ^C typed into it reaches ferry as SIGINT.
    const terminal = ferryInTerminal(
      ['submit', '--wait', '--image', 'x/y:1', '--', 'sleep', '30'],
      server.url,
    );
    await expect.poll(() => terminal.screen(), { timeout: 20_000 }).toMatch(/ex_\w+ RUNNING \d+s/);

    terminal.type('\x03');
    const code = await terminal.closed;

    const screen = terminal.screen();
    const id = /(ex_\w+) RUNNING/.exec(screen)?.[1] ?? '';
    expect(code).toBe(130);
    expect(screen).toContain(
      `ferry: stopped watching; ${id} is still RUNNING; \`ferry cancel ${id}\` stops it`,
    );
    const after = await server.client.json<Execution>('GET', `/v1/executions/${id}`);
    expect(after.body.state).toBe('RUNNING');
    await ferry(['cancel', id]);
  });
});

describe('ls', () => {
  test('shows age, duration and command, filters by label and image on the server, and its next-page hint keeps every filter', async () => {
    const run = `ls-${Date.now()}`;
    for (let i = 0; i < 3; i++) {
      await ferry([
        'submit',
        '--wait',
        '--image',
        'x/y:1',
        '--label',
        `run=${run}`,
        '--label',
        'kind=a',
        '--',
        'echo',
        `job ${i}`,
      ]);
    }
    await ferry(['submit', '--wait', '--image', 'x/other:1', '--label', `run=${run}`, '--', 'true']);

    const first = await ferry([
      'ls',
      '--label',
      `run=${run}`,
      '--image',
      'x/y:1',
      '--limit',
      '2',
      '--labels',
    ]);
    const lines = first.stdout.trimEnd().split('\n');
    const hint = /^\(more: (ferry .*)\)$/.exec(lines.at(-1) ?? '')?.[1] ?? '';
    const second = await ferry(hint.split(' ').slice(1));
    const other = await ferry(['ls', '--label', `run=${run}`, '--image', 'x/other:1']);

    expect(first.code).toBe(0);
    expect(lines[0]).toMatch(/^ID +STATE +EXIT +AGE +DURATION +IMAGE +COMMAND +LABELS$/);
    expect(lines[1]).toMatch(/^ex_\w+ +COMPLETED +0 +\d+s +\d+s +x\/y:1 +echo job 2 +run=ls-\d+,kind=a$/);
    expect(lines[2]).toMatch(/echo job 1/);
    expect(hint).toMatch(
      new RegExp(`^ferry ls --label run=${run} --image x/y:1 --limit 2 --labels --cursor \\S+$`),
    );
    const rest = second.stdout.trimEnd().split('\n');
    expect(rest).toHaveLength(2);
    expect(rest[1]).toMatch(/echo job 0/);
    expect(other.stdout.trimEnd().split('\n')).toHaveLength(2);
    expect(other.stdout).toMatch(/x\/other:1 +true/);
  });

  test('the API answers a label filter that is not KEY=VALUE with 400 problem details', async () => {
    const reply = await fetch(`${server.url}/v1/executions?label=team`);

    expect(reply.status).toBe(400);
    expect(reply.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(((await reply.json()) as { detail: string }).detail).toBe(
      'label filter must be KEY=VALUE with a label key, got team',
    );
  });

  test('a label filter that is not KEY=VALUE is a usage error', async () => {
    const run = await ferry(['ls', '--label', 'team']);

    expect(run.code).toBe(2);
    expect(run.stderr).toBe('ferry: --label must be KEY=VALUE, got team (see `ferry ls --help`)\n');
  });
});

describe('rm', () => {
  test('deletes an ended execution and its output; refuses a running one, which stays', async () => {
    const done = await ferry(['submit', '--wait', '--json', '--image', 'x/y:1', '--', 'echo', 'bye']);
    const doneId = (JSON.parse(done.stdout) as Execution).id;
    const running = await ferry(['submit', '--image', 'x/y:1', '--', 'sleep', '30']);
    const runningId = running.stdout.trim();
    await server.client.json('GET', `/v1/executions/${runningId}/wait?state=RUNNING&timeoutSeconds=20`);

    const stored = path.join(server.dataDir, 'objects', 'executions', doneId);
    expect((await fsp.stat(stored)).isDirectory()).toBe(true);

    const rm = await ferry(['rm', doneId, runningId]);

    expect(rm.code).toBe(1);
    expect(rm.stdout).toBe(`deleted ${doneId}\n`);
    expect(rm.stderr).toBe(
      `ferry: ${runningId}: execution ${runningId} is RUNNING: only an ended execution can be deleted; cancel it first\n`,
    );
    expect((await fetch(`${server.url}/v1/executions/${doneId}`)).status).toBe(404);
    expect((await fetch(`${server.url}/v1/executions/${doneId}/logs?stream=stdout`)).status).toBe(404);
    await expect(fsp.stat(stored)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await server.client.json<Execution>('GET', `/v1/executions/${runningId}`)).body.state).toBe(
      'RUNNING',
    );

    await ferry(['cancel', runningId]);
    await server.client.json('GET', `/v1/executions/${runningId}/wait?timeoutSeconds=20`);
    const again = await ferry(['rm', '--json', runningId]);
    expect(JSON.parse(again.stdout)).toEqual([{ executionId: runningId, deleted: true }]);
  });
});
