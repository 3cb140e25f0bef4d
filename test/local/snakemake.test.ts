// A real workflow engine on Ferry's TES API: Snakemake with snakemake-executor-plugin-tes sends
// each job of a two-step workflow to a local server with the Docker backend, and the results are
// what the workflow computes. The plugin assumes no shared file system, so Snakemake keeps the
// workflow's files in S3 storage (a moto server the containers reach on the Docker bridge); inside
// each task Snakemake itself, from the offline image `ferry-test:snakemake`, fetches the job's
// inputs and stores its outputs there.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { FerryClient } from '../../cli/client.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import { removeContainersOf } from '../support/docker.ts';
import { type LocalServer, startMoto } from '../support/moto.ts';
import { startServer, type TestServer, tempDir } from '../support/server.ts';

const dockerAvailable = inject('dockerAvailable');
const SNAKEMAKE = path.resolve('.venv-snakemake/bin/snakemake');
const IMAGE = 'ferry-test:snakemake';
const TOKEN = 'snakemake-test-token-0123';
const BUCKET = 'ferry-workflows';
const installed = fs.existsSync(SNAKEMAKE);
if (process.env.CI === 'true' && (!dockerAvailable || !installed)) {
  throw new Error(
    'CI=true but Docker or .venv-snakemake (from test/local/snakemake-requirements.txt) is missing; .ci/run makes both',
  );
}

const SNAKEFILE = `rule all:
    input: "results/summary.txt"

rule shout:
    input: "data/words.txt"
    output: "work/shouted.txt"
    shell: "tr a-z A-Z < {input} > {output}"

rule summarise:
    input: "work/shouted.txt"
    output: "results/summary.txt"
    threads: 1
    resources: mem_mb=512
    shell: "(wc -l < {input}; sort {input} | head -n 1) > {output}"
`;

describe.skipIf(!dockerAvailable || !installed)('Snakemake through the TES API', () => {
  let server: TestServer;
  let storage: LocalServer;
  let s3: S3Client;
  let work: string;
  let ids: string[] = [];

  beforeAll(async () => {
    const docker = new Docker();
    await docker
      .getImage(IMAGE)
      .inspect()
      .catch(() =>
        execFileSync('bash', [path.resolve('scripts/build-snakemake-image.sh'), IMAGE], { stdio: 'inherit' }),
      );
    // Where the containers reach this machine: the default bridge's gateway. The engine does not
    // always name it; it is then the subnet's first address, which Docker gives the bridge.
    const bridge = (await docker.getNetwork('bridge').inspect()) as {
      IPAM: { Config: { Gateway?: string; Subnet?: string }[] };
    };
    const subnet = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/\d+$/.exec(bridge.IPAM.Config[0]?.Subnet ?? '');
    const gateway =
      bridge.IPAM.Config[0]?.Gateway ??
      (subnet === null ? undefined : `${subnet[1]}.${subnet[2]}.${subnet[3]}.${Number(subnet[4]) + 1}`);
    if (gateway === undefined) {
      throw new Error(`the Docker bridge network has no gateway address (${JSON.stringify(bridge.IPAM)})`);
    }
    storage = await startMoto('python3', gateway);
    s3 = new S3Client({
      endpoint: storage.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
    });
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    work = await tempDir('ferry-snakemake-');
    server = await startServer({ FERRY_BACKEND: 'docker', FERRY_TOKEN: TOKEN });
  }, 300_000);

  afterAll(async () => {
    await server?.close();
    await removeContainersOf(ids);
    await storage?.stop();
    if (work !== undefined) await fsp.rm(work, { recursive: true, force: true });
    if (server !== undefined) await fsp.rm(server.dataDir, { recursive: true, force: true });
  });

  it('runs a two-step workflow, each step a TES task, and its results are right', async () => {
    const prefix = `run-${Date.now()}`;
    await s3.send(
      new PutObjectCommand({ Bucket: BUCKET, Key: `${prefix}/data/words.txt`, Body: 'pear\napple\nfig\n' }),
    );
    const workflow = path.join(work, 'workflow');
    await fsp.mkdir(workflow);
    await fsp.writeFile(path.join(workflow, 'Snakefile'), SNAKEFILE);
    // The plugin reads a Funnel log from $GITHUB_WORKSPACE when a task fails; give it one.
    const workspace = path.join(work, 'workspace');
    await fsp.mkdir(workspace);
    await fsp.writeFile(path.join(workspace, 'funnel.log'), '');

    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn(
        SNAKEMAKE,
        [
          '--executor',
          'tes',
          '--tes-url',
          `${server.url}/ga4gh/tes`,
          '--tes-token',
          TOKEN,
          '--container-image',
          IMAGE,
          '--jobs',
          '2',
          '--seconds-between-status-checks',
          '1',
          '--default-storage-provider',
          's3',
          '--default-storage-prefix',
          `s3://${BUCKET}/${prefix}`,
          '--storage-s3-endpoint-url',
          storage.endpoint,
          '--storage-s3-access-key',
          'testing',
          '--storage-s3-secret-key',
          'testing',
          '--storage-s3-region',
          'us-east-1',
        ],
        {
          cwd: workflow,
          env: { PATH: process.env.PATH, HOME: work, GITHUB_WORKSPACE: workspace },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let text = '';
      const keep = (chunk: Buffer) => {
        text += chunk.toString();
      };
      child.stdout.on('data', keep);
      child.stderr.on('data', keep);
      child.on('close', (exit) => resolve({ code: exit, output: text }));
    });
    const executions = (
      await new FerryClient(server.url, TOKEN).json<{ items: Execution[] }>('GET', '/v1/executions?limit=50')
    ).body.items;
    ids = executions.map((e) => e.id);
    if (code !== 0) throw new Error(`snakemake exited ${code}:\n${output.slice(-4000)}`);

    const summary = await s3.send(
      new GetObjectCommand({ Bucket: BUCKET, Key: `${prefix}/results/summary.txt` }),
    );
    expect(await summary.Body?.transformToString()).toBe('3\nAPPLE\n');
    const shouted = await s3.send(
      new GetObjectCommand({ Bucket: BUCKET, Key: `${prefix}/work/shouted.txt` }),
    );
    expect(await shouted.Body?.transformToString()).toBe('PEAR\nAPPLE\nFIG\n');
    // Each rule ran as its own task on Ferry, through the same bid and dispatch as any job.
    expect(executions.map((e) => [e.spec.name, e.state, e.exitCode]).sort()).toEqual([
      [expect.stringMatching(/^snakejob\.shout\./), 'COMPLETED', 0],
      [expect.stringMatching(/^snakejob\.summarise\./), 'COMPLETED', 0],
    ]);
    expect(executions.every((e) => e.spec.image === IMAGE)).toBe(true);
  }, 600_000);
});
