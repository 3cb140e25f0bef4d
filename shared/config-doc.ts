// What each setting means, for people: the README's settings tables are rendered from this
// (scripts/settings-table.ts), and the type makes every setting of the schema appear here.
import type { EnvSchema } from './config.ts';

export type SettingName = keyof typeof EnvSchema.shape;

export interface SettingDoc {
  /** The default, as a person reads it ('—' for none). */
  readonly default: string;
  readonly meaning: string;
  /** Set by the CDK construct on each function of a deployment, not by hand. */
  readonly deployment?: true;
}

export const SETTINGS: Readonly<Record<SettingName, SettingDoc>> = {
  FERRY_BACKEND: { default: '`auto`', meaning: '`docker`, `process`, or `auto` (Docker when it answers)' },
  FERRY_HOST: { default: '`127.0.0.1`', meaning: 'the address `serve` listens on' },
  FERRY_PORT: {
    default: '`8080`',
    meaning: 'the port `serve` listens on (`0`: any free port, printed at start)',
  },
  FERRY_DATA_DIR: {
    default: '`./.ferry`',
    meaning:
      'the database `ferry.db` (executions, idempotency keys, the queue), results, output spools and keys; survives restarts; one server at a time',
  },
  FERRY_TOKEN: { default: '—', meaning: 'if set, the only bearer token accepted' },
  FERRY_ALLOWED_ORIGINS: {
    default: '—',
    meaning:
      "comma-separated web origins (`https://dash.example`) besides the server's own whose pages may call the API; their hosts may also name the server",
  },
  FERRY_MAX_CONCURRENCY: {
    default: '`4`',
    meaning:
      'jobs running at once, within the CPU and memory below: with the default 1 vCPU per job a 2-core host runs 2 at once whatever this says',
  },
  FERRY_MAX_CPU: {
    default: 'host cores',
    meaning: 'vCPUs shared by running jobs; also the most one job may ask',
  },
  FERRY_MAX_MEMORY: {
    default: '¾ of host memory',
    meaning: 'memory shared by running jobs (`16GiB`); also the most one job may ask',
  },
  FERRY_STARVATION_SECONDS: {
    default: '`60`',
    meaning: 'a queued job waiting this long reserves capacity, so smaller jobs stop passing it',
  },
  FERRY_BID_TTL_SECONDS: { default: '`300`', meaning: 'how long an offer stays open' },
  FERRY_IMAGE_ALLOW: {
    default: '`*`',
    meaning: 'comma-separated image patterns a job may use (`*` matches anything)',
  },
  FERRY_IMAGE_DENY: { default: '—', meaning: 'comma-separated image patterns refused even when allowed' },
  FERRY_REGISTRY_ALLOW: {
    default:
      "`docker.io,registry-1.docker.io,public.ecr.aws` (on AWS also the account's `ACCOUNT.dkr.ecr.*.amazonaws.com`)",
    meaning: 'registry hosts (with port) images may be pulled from; see "Images"',
  },
  FERRY_PUBLISH_ALLOW: {
    default: '`*` locally, nothing on AWS',
    meaning:
      '`s3://` destinations an accepted result may be published to; locally a copy lands under `published/` in the data directory',
  },
  FERRY_INPUT_ALLOW: {
    default: 'nothing locally (inline content only); on AWS `s3://BUCKET/inputs/` of the deployment',
    meaning:
      "comma-separated prefixes inputs may be fetched from: `s3://bucket/prefix/`, `https://host/path/`, `file:///dir/` (files of the machine the local server runs on; `*` never allows those), or `*`; the bid declines any other source. On AWS it adds to the deployment's own `inputs/` (set by the construct's `inputSources`, which also lets the tasks read them)",
  },
  FERRY_OUTPUT_ALLOW: {
    default: 'nothing',
    meaning:
      "comma-separated `file:///dir/` prefixes of the machine the local server runs on that a job's outputs may be delivered to (an output's `url`, as TES clients give it), once they are stored; the bid declines any other destination",
  },
  FERRY_S3_FORCE_PATH_STYLE: {
    default: '`false`',
    meaning:
      'address S3 inputs by path (`endpoint/bucket/key`), for an S3-compatible store or emulator named by `AWS_ENDPOINT_URL_S3`',
  },
  FERRY_MIN_TIMEOUT_SECONDS: { default: '`1`', meaning: 'the shortest job timeout allowed' },
  FERRY_MAX_TIMEOUT_SECONDS: { default: '`86400`', meaning: 'the longest job timeout allowed' },
  FERRY_ALLOW_EGRESS: { default: '`true`', meaning: 'whether jobs may ask for `network: egress`' },
  FERRY_MAX_OUTPUT_BYTES: { default: '`256MiB`', meaning: 'the largest per-stream limit a job may ask for' },
  FERRY_QUEUE_MAX_RECEIVES: {
    default: '`5`',
    meaning:
      'deliveries of a dispatch message before it goes to the dead letters (SQS semantics locally too)',
  },
  FERRY_QUEUE_VISIBILITY_SECONDS: {
    default: '`30`',
    meaning: 'how long a received dispatch message stays hidden before it is delivered again',
  },
  FERRY_SWEEP_INTERVAL_SECONDS: {
    default: '`1`',
    meaning: 'how often the local sweeper runs (deadlines, expired offers, lost tasks, retention)',
  },
  FERRY_DOCKER_SOCKET: { default: '`/var/run/docker.sock`', meaning: "the Docker Engine's socket" },
  FERRY_DOCKER_CAPTURE: {
    default: '`wrapper` (`journal` when no wrapper can be built)',
    meaning:
      'how the Docker backend captures output: `wrapper`, `journal` (attach, with the engine\'s `local` log driver to replay after a restart) or `attach` (nothing kept for a restart); see "Output on the Docker backend"',
  },
  FERRY_RESULT_LINK_SECONDS: {
    default: '`3600`',
    meaning: 'how long the download links of a result stay valid',
  },
  FERRY_LOG_LEVEL: {
    default: '`info`',
    meaning: '`debug`, `info`, `warn`, `error` or `silent`: the server’s JSON log on stderr',
  },
  FERRY_URL: { default: '`http://127.0.0.1:8080`', meaning: 'where the CLI finds the server' },
  FERRY_RETENTION_DAYS: {
    default: '`30`',
    meaning:
      "ended executions, with their stored output, are deleted this many days after they ended (on AWS, by DynamoDB's TTL and the bucket's lifecycle)",
  },
  FERRY_NETWORK_ISOLATION: {
    default: '`open`',
    meaning: '`isolated`: Fargate tasks sit in subnets without a route out, so `network: none` holds',
    deployment: true,
  },
  FERRY_CAPACITY_PROVIDER: { default: '`FARGATE`', meaning: '`FARGATE` or `FARGATE_SPOT`', deployment: true },
  FERRY_TABLE_NAME: { default: '—', meaning: 'the DynamoDB table', deployment: true },
  FERRY_QUEUE_URL: { default: '—', meaning: 'the SQS dispatch queue', deployment: true },
  FERRY_BUCKET: { default: '—', meaning: 'the S3 bucket for results', deployment: true },
  FERRY_CLUSTER: { default: '—', meaning: 'the ECS cluster', deployment: true },
  FERRY_SUBNETS: { default: '—', meaning: 'comma-separated subnets for tasks', deployment: true },
  FERRY_SECURITY_GROUPS: {
    default: '—',
    meaning: 'comma-separated security groups for tasks',
    deployment: true,
  },
  FERRY_ASSIGN_PUBLIC_IP: { default: '`false`', meaning: 'whether tasks get a public IP', deployment: true },
  FERRY_TASK_ROLE_ARN: {
    default: '—',
    meaning: "the tasks' role (the publisher's permissions)",
    deployment: true,
  },
  FERRY_EXECUTION_ROLE_ARN: {
    default: '—',
    meaning: "the tasks' execution role (image pulls, logs)",
    deployment: true,
  },
  FERRY_LOG_GROUP: { default: '—', meaning: "the tasks' CloudWatch log group", deployment: true },
  FERRY_RUNNER_IMAGE: {
    default: '—',
    meaning: "Ferry's runner image (wrapper and publisher)",
    deployment: true,
  },
  FERRY_API_URL: {
    default: '—',
    meaning: "Ferry's own API, where task publishers ask for upload links",
    deployment: true,
  },
};

/** The settings table, local settings first, then those the deployment sets. */
export function settingsTable(deployment: boolean): string {
  const rows = (Object.entries(SETTINGS) as [SettingName, SettingDoc][])
    .filter(([, doc]) => (doc.deployment === true) === deployment)
    .map(([name, doc]) => `| \`${name}\` | ${doc.default} | ${doc.meaning} |`);
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n');
}
