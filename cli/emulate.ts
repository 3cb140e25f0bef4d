// `ferry emulate aws`: the stack `cdk deploy` would ship, run on this machine so its AWS wiring
// can be tried before a deploy. `cdk synth` writes the template and the bundle; moto stands in
// for AWS; RunTask starts real containers on the local Docker Engine; every AWS call is checked
// against the template's IAM policies. It prints the API's address and a caller's keys, and
// runs until Ctrl-C.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { startMoto } from '#shared/adapters/emulated/moto-server.ts';
import { createLogger } from '#shared/logger.ts';
import { EmulatedAwsDeployment } from '#shared/runtime/emulated-aws.ts';
import { type Io, UsageError } from './main.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** Services that may answer elsewhere than moto: SigV4 name, and the SDK's endpoint variable. */
const ELSEWHERE = [
  ['s3', 'AWS_ENDPOINT_URL_S3'],
  ['sqs', 'AWS_ENDPOINT_URL_SQS'],
  ['events', 'AWS_ENDPOINT_URL_EVENTBRIDGE'],
] as const;

/**
 * `cdk synth` of this checkout's app into `outdir`, bundling on: what `cdk deploy` would ship,
 * with the app's context options (`ferry:maxConcurrentJobs`, …) as given.
 */
export function synthesize(
  outdir: string,
  env: Record<string, string | undefined>,
  context: Readonly<Record<string, string>> = {},
): void {
  execFileSync(
    path.join(ROOT, 'node_modules/.bin/cdk'),
    [
      'synth',
      '--output',
      outdir,
      '--quiet',
      '--no-notices',
      '--no-version-reporting',
      ...Object.entries(context).flatMap(([key, value]) => ['-c', `${key}=${value}`]),
    ],
    { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'], env: { ...env, CDK_DISABLE_CLI_TELEMETRY: 'true' } },
  );
}

export async function emulate(
  args: readonly string[],
  portFlag: string | undefined,
  io: Io,
): Promise<number> {
  if (args[0] !== 'aws' || args.length > 1)
    throw new UsageError('emulate takes one target: `ferry emulate aws`');
  const port = portFlag === undefined ? 0 : Number(portFlag);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`--port must be a port number, not ${portFlag}`);
  }
  const docker = new Docker();
  try {
    await docker.ping();
  } catch {
    io.err.write('ferry: emulate aws runs tasks as containers and needs a Docker Engine; none answers\n');
    return 1;
  }
  const say = (line: string) => io.err.write(`ferry: ${line}\n`);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-emulate-'));
  const runnerImage = `ferry-runner:emulate-${process.pid}`;
  let moto: Awaited<ReturnType<typeof startMoto>> | undefined;
  let deployment: EmulatedAwsDeployment | undefined;
  try {
    say('synthesizing the stack (cdk synth)…');
    synthesize(work, io.env);
    say('building the runner image offline…');
    execFileSync('bash', [path.join(ROOT, 'scripts/build-runner-image.sh'), runnerImage], {
      cwd: ROOT,
      stdio: 'ignore',
    });
    say('starting the AWS emulator (moto)…');
    moto = await startMoto(io.env.PYTHON ?? 'python3');
    // S3, SQS and EventBridge may be another emulator's (LocalStack's), as the SDK's
    // per-service endpoint variables name them; everything else is moto's.
    const endpoints: { default: string } & Record<string, string> = { default: moto.endpoint };
    for (const [service, variable] of ELSEWHERE) {
      const endpoint = io.env[variable];
      if (endpoint === undefined || endpoint === '') continue;
      endpoints[service] = endpoint;
      say(`${service} calls go to ${endpoint} (${variable})`);
    }
    deployment = await EmulatedAwsDeployment.start({
      assemblyDir: work,
      endpoints,
      docker,
      runnerImage,
      apiPort: port,
      log: createLogger(io.env.FERRY_LOG_LEVEL === 'debug' ? 'debug' : 'warn'),
    });
    const caller = deployment.addCaller('you');
    io.out.write(
      [
        `Ferry's stack is running as it would on AWS. Its API: ${deployment.apiUrl}`,
        'Call it with these keys (IAM allows them execute-api:Invoke, as grantInvoke would):',
        `  export FERRY_URL=${deployment.apiUrl}`,
        `  export AWS_ACCESS_KEY_ID=${caller.accessKeyId}`,
        `  export AWS_SECRET_ACCESS_KEY=${caller.secretAccessKey}`,
        '  ferry submit --sigv4 --region us-east-1 --wait --image IMAGE -- CMD…',
        '  ferry dashboard --sigv4 --region us-east-1',
        'Ctrl-C stops it and removes what it made.',
        '',
      ].join('\n'),
    );
    await new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    });
    const refused = deployment.calls.filter((c) => c.authorizations.some((a) => !a.allowed));
    say(`stopping; ${deployment.calls.length} AWS calls made, ${refused.length} refused by IAM`);
    return 0;
  } finally {
    await deployment?.close().catch(() => undefined);
    await moto?.stop().catch(() => undefined);
    await docker
      .getImage(runnerImage)
      .remove({ force: true })
      .catch(() => undefined);
    fs.rmSync(work, { recursive: true, force: true });
  }
}
