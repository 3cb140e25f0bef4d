// The command line's grammar: commands, their options, help with examples, and usage errors
// that name the mistake ("did you mean", a command given without `--`). Parsing only: what
// each command does is in main.ts.
import { Command, CommanderError, Option } from 'commander';
import { FERRY_VERSION } from '#shared/version.ts';

/** A mistake in how ferry was called: one line on stderr, exit 2, and where to read more. */
export class UsageError extends Error {
  constructor(
    message: string,
    /** The command whose help explains the fix, if one does. */
    readonly verb?: string,
  ) {
    super(message);
  }
}

export interface Flags {
  readonly json?: boolean;
  readonly url?: string;
  readonly token?: string;
  readonly sigv4?: boolean;
  readonly region?: string;
  readonly port?: string;
  readonly image?: string;
  readonly cpu?: string;
  readonly gpu?: string;
  readonly memory?: string;
  readonly disk?: string;
  readonly timeout?: string;
  readonly env?: readonly string[];
  readonly workdir?: string;
  readonly network?: string;
  readonly stdoutLimit?: string;
  readonly stderrLimit?: string;
  readonly inlineLimit?: string;
  readonly keep?: string;
  readonly label?: readonly string[];
  readonly labels?: boolean;
  readonly priority?: string;
  readonly publish?: string;
  readonly input?: readonly string[];
  readonly output?: readonly string[];
  readonly outputLimit?: string;
  readonly download?: string;
  readonly file?: string;
  readonly wait?: boolean;
  readonly follow?: boolean;
  readonly stderr?: boolean;
  readonly state?: readonly string[];
  readonly limit?: string;
  readonly cursor?: string;
  readonly accept?: boolean;
  readonly reject?: boolean;
  readonly justification?: string;
  readonly idempotencyKey?: string;
}

export type CommandLine =
  | {
      readonly kind: 'run';
      readonly verb: string;
      /** The command's own arguments (an execution id, `aws` for emulate). */
      readonly args: readonly string[];
      readonly flags: Flags;
      /** The job's argv: everything after `--`. */
      readonly command: readonly string[];
    }
  /** Help or the version was printed: nothing more to do. */
  | { readonly kind: 'done'; readonly code: number };

export interface Output {
  readonly out: NodeJS.WritableStream;
  readonly err: NodeJS.WritableStream;
}

const collect = (value: string, previous: readonly string[] = []): string[] => [...previous, value];

const JOB_COMMANDS = new Set(['bid', 'submit']);

function addJobOptions(command: Command): Command {
  return command
    .option('--image <image>', 'the container image (required, here or in --file)')
    .option('--cpu <vcpu>', 'vCPUs, e.g. 0.5 (default 1 locally, 0.25 on Fargate)')
    .option('--gpu <count>', 'GPUs (declined where there are none)')
    .option('--memory <size>', 'memory, MiB or with a unit: 512MiB, 2GiB')
    .option('--disk <size>', 'disk, GiB or with a unit: 30GiB')
    .option('--timeout <duration>', 'longest run: seconds or with units, 90s, 10m, 1h30m (default 1h)')
    .option('--env <KEY=VALUE>', 'an environment variable; repeat for more', collect)
    .option('--workdir <dir>', 'the working directory in the container')
    .addOption(new Option('--network <mode>', 'network access (default none)').choices(['none', 'egress']))
    .option('--stdout-limit <size>', 'stdout kept, e.g. 10MiB (the default)')
    .option('--stderr-limit <size>', 'stderr kept (default 10MiB)')
    .option('--inline-limit <size>', 'output shown inline in the result (default 4KiB)')
    .addOption(
      new Option('--keep <part>', 'what a truncated stream keeps').choices(['head', 'tail', 'head+tail']),
    )
    .option(
      '--input <SOURCE:PATH>',
      'fetch s3://bucket/key, s3://bucket/prefix/ (a directory) or https://… to PATH before the command; @FILE sends a local text file; repeat for more',
      collect,
    )
    .option(
      '--output <PATH>',
      'collect PATH after the command (PATH/ for a directory); repeat for more',
      collect,
    )
    .option('--output-limit <size>', 'the most kept of one output (default 1GiB)')
    .option('--label <KEY=VALUE>', 'a label; repeat for more', collect)
    .option('--priority <n>', 'from -100 to 100 (default 0): higher goes first when capacity frees')
    .option(
      '--publish <s3://bucket/prefix>',
      'where an accepted result is copied (locally: under published/ in the data directory)',
    )
    .option('--file <spec.json>', 'a whole job spec as a JSON object; options given here override it');
}

const examples = (...lines: string[]) => `\nExamples:\n${lines.map((line) => `  $ ${line}`).join('\n')}\n`;

/** The program: every command, its options and its help. `captured` receives the chosen command. */
function program(output: Output, captured: (verb: string, args: string[], flags: Flags) => void): Command {
  const root = new Command('ferry')
    .description(
      'Ferry runs container jobs: it bids on a job, runs it under the limits it offered, and keeps its output.',
    )
    .usage('<command> [options]')
    .version(`ferry ${FERRY_VERSION}`, '-v, --version', 'print the version')
    .helpOption('-h, --help', 'help for ferry or a command (ferry submit --help)')
    .option('--url <url>', 'the Ferry API (FERRY_URL; default http://127.0.0.1:8080)')
    .option('--token <token>', 'bearer token (FERRY_TOKEN)')
    .option('--json', 'print JSON for scripts')
    .option('--sigv4', 'sign requests with AWS credentials (automatic for execute-api URLs)')
    .option('--region <region>', 'the AWS region to sign for, with --sigv4')
    .showSuggestionAfterError(true)
    .configureHelp({ showGlobalOptions: true })
    .exitOverride()
    .configureOutput({
      writeOut: (text) => output.out.write(text),
      writeErr: (text) => output.err.write(text),
      // Usage errors are printed by the caller, in one line.
      outputError: () => undefined,
    })
    .addHelpText(
      'after',
      examples(
        'ferry serve',
        'ferry submit --wait --image alpine:3.20 -- echo hello',
        'ferry ls --state RUNNING',
      ),
    );
  const on =
    (verb: string) =>
    (...params: unknown[]) => {
      const command = params.at(-1) as Command;
      captured(verb, command.args, command.optsWithGlobals() as Flags);
    };

  root
    .command('serve')
    .description('run the local executor (Docker, or plain processes without Docker)')
    .action(on('serve'));
  root
    .command('dashboard')
    .description(
      'serve the dashboard on this machine for a Ferry deployed on AWS, signing its calls with your AWS credentials',
    )
    .option('--port <n>', 'the local port (default: a free one)')
    .addHelpText(
      'after',
      examples(
        'ferry dashboard --url https://abc123.execute-api.eu-west-1.amazonaws.com',
        'ferry dashboard --url https://ferry.example.com --sigv4 --region eu-west-1 --port 8090',
      ),
    )
    .action(on('dashboard'));
  root
    .command('emulate')
    .description('run the stack `cdk deploy` ships, on this machine')
    .argument('<what>', 'aws')
    .option('--port <n>', 'the port of the emulated API')
    .addHelpText('after', examples('ferry emulate aws --port 4566'))
    .action(on('emulate'));
  addJobOptions(
    root
      .command('bid')
      .description('ask for a bid on a job: the size and price Ferry offers, or why it declines')
      .usage('[options] -- COMMAND [ARG...]')
      .argument('[command...]'),
  )
    .addHelpText(
      'after',
      examples('ferry bid --image alpine:3.20 --cpu 2 --memory 4GiB -- make test', 'ferry accept ex_…'),
    )
    .action(on('bid'));
  addJobOptions(
    root
      .command('submit')
      .description('bid and accept in one step; with --wait, exit with the job’s exit code')
      .usage('[options] -- COMMAND [ARG...]')
      .argument('[command...]'),
  )
    .option('--wait', 'wait for the end; print the output and exit with the job’s code')
    .option('-f, --follow', 'print the output live while the job runs')
    .option('--idempotency-key <key>', 'makes a retried submit return the first execution')
    .addHelpText(
      'after',
      examples(
        'ferry submit --wait --image alpine:3.20 -- echo hello',
        "ferry submit --follow --image python:3.12 --timeout 10m -- python -c 'print(42)'",
        'ferry submit --file spec.json --label team=data',
      ),
    )
    .action(on('submit'));
  root
    .command('accept')
    .description('accept a bid: the job is queued')
    .argument('<id>')
    .option('--wait', 'wait for the end; print the output and exit with the job’s code')
    .option('-f, --follow', 'print the output live while the job runs')
    .addHelpText('after', examples('ferry accept ex_…', 'ferry accept --follow ex_…'))
    .action(on('accept'));
  root
    .command('reject')
    .description('reject a bid')
    .argument('<id>')
    .option('--justification <text>', 'why, kept in the history')
    .action(on('reject'));
  root.command('status').description('show an execution').argument('<id>').action(on('status'));
  root
    .command('ls')
    .description('list executions, newest first')
    .option('--state <state>', 'only in this state; repeat for several', collect)
    .option('--label <KEY=VALUE>', 'only with this label; repeat: all must match', collect)
    .option('--image <image>', 'only of this image')
    .option('--labels', 'show a LABELS column')
    .option('--limit <n>', 'at most this many')
    .option('--cursor <cursor>', 'the page after the one that gave this cursor')
    .addHelpText(
      'after',
      examples('ferry ls --state QUEUED --state RUNNING', 'ferry ls --label team=data --labels'),
    )
    .action(on('ls'));
  root
    .command('wait')
    .description('wait until an execution ends; exit with its code')
    .argument('<id>')
    .option('--timeout <duration>', 'give up after this long (exit 1): 30s, 10m')
    .action(on('wait'));
  root
    .command('logs')
    .description('print an execution’s stored output, or follow it live')
    .argument('<id>')
    .option('--stderr', 'stderr rather than stdout')
    .option('-f, --follow', 'follow while the job runs')
    .addHelpText('after', examples('ferry logs ex_… -f', 'ferry logs ex_… --stderr'))
    .action(on('logs'));
  root
    .command('rm')
    .description('delete ended executions and their stored output (what was published stays)')
    .argument('<id...>')
    .addHelpText('after', examples('ferry rm ex_…', 'ferry rm ex_… ex_…'))
    .action(on('rm'));
  root
    .command('cancel')
    .description('cancel a queued, launching or running execution')
    .argument('<id>')
    .action(on('cancel'));
  root
    .command('result')
    .description('show the result manifest with download links, or review it')
    .argument('<id>')
    .option('--accept', 'accept the result (publishes it, if the job asked)')
    .option('--reject', 'reject the result (its stored output is deleted)')
    .option('--justification <text>', 'why, with --accept or --reject')
    .option(
      '--download <dir>',
      'save stdout, stderr and every output into DIR, each checked against its digest',
    )
    .addHelpText(
      'after',
      examples(
        'ferry result ex_…',
        'ferry result ex_… --download ./results',
        "ferry result ex_… --reject --justification 'wrong input'",
      ),
    )
    .action(on('result'));
  root.command('node').description('capacity, usage, per-job limits, backend and version').action(on('node'));
  return root;
}

/** Parses `argv`; writes help or the version itself, and throws UsageError for a mistake. */
export function parseCommandLine(argv: readonly string[], output: Output): CommandLine {
  const dash = argv.indexOf('--');
  const before = dash < 0 ? [...argv] : argv.slice(0, dash);
  const command = dash < 0 ? [] : argv.slice(dash + 1);
  let chosen: { verb: string; args: string[]; flags: Flags } | undefined;
  const root = program(output, (verb, args, flags) => {
    chosen = { verb, args, flags };
  });
  if (before.length === 0) {
    output.err.write(root.helpInformation());
    return { kind: 'done', code: 2 };
  }
  const verb = before.find((word) => root.commands.some((c) => c.name() === word));
  try {
    root.parse(before, { from: 'user' });
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    // `--help`, `help COMMAND` and `--version` print what was asked for.
    if (['commander.helpDisplayed', 'commander.help', 'commander.version'].includes(error.code)) {
      return { kind: 'done', code: 0 };
    }
    const stray =
      verb !== undefined && JOB_COMMANDS.has(verb) && dash < 0 ? strayCommand(root, verb, before) : [];
    if (stray.length > 0) throw missingDash(verb ?? '', stray);
    throw new UsageError(oneLine(error.message), verb);
  }
  if (chosen === undefined) throw new UsageError('no command given', undefined);
  if (JOB_COMMANDS.has(chosen.verb) && chosen.args.length > 0) throw missingDash(chosen.verb, chosen.args);
  return { kind: 'run', ...chosen, command };
}

/** Commander's message, on one line, without its "error:" prefix. */
function oneLine(message: string): string {
  return message
    .replace(/^error: /, '')
    .replace(/\s*\n\s*\(Did you mean (.+)\?\)/, ' (did you mean $1?)')
    .replace(/\s*\n\s*/g, ' ')
    .trim();
}

function missingDash(verb: string, stray: readonly string[]): UsageError {
  return new UsageError(
    `the job's command goes after \`--\`: ferry ${verb} [options] -- ${stray.join(' ')}`,
    verb,
  );
}

/**
 * The words of a job's command given without `--`: from the first word that is neither an
 * option nor an option's value to the end.
 */
function strayCommand(root: Command, verb: string, words: readonly string[]): string[] {
  const command = root.commands.find((c) => c.name() === verb);
  const options = [...root.options, ...(command?.options ?? [])];
  const takesValue = (word: string) =>
    options.some((o) => (o.long === word || o.short === word) && (o.required || o.optional));
  for (let i = words.indexOf(verb) + 1; i < words.length; i++) {
    const word = words[i] ?? '';
    if (word.startsWith('-')) {
      if (!word.includes('=') && takesValue(word)) i++;
      continue;
    }
    return words.slice(i);
  }
  return [];
}
