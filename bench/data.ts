// Data in and out at scale: 1 GiB staged from the emulator's S3 the way Ferry fetches an input,
// beside a plain SDK download of the same object, and 1 GiB collected into S3 the way Ferry
// stores an output, beside a plain SDK upload of the same file; interleaved, each side in its
// own process, whose peak memory is reported.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const run = promisify(execFile);

export interface DataBench {
  readonly bytes: number;
  readonly rounds: number;
  readonly stageMiBps: number;
  readonly downloadMiBps: number;
  readonly collectMiBps: number;
  readonly uploadMiBps: number;
  readonly stagePeakRssMiB: number;
  readonly collectPeakRssMiB: number;
  readonly downloadPeakRssMiB: number;
  readonly uploadPeakRssMiB: number;
}

interface Measured {
  readonly seconds: number;
  readonly bytes: number;
  readonly peakRssMiB: number;
}

async function side(
  mode: string,
  endpoint: string,
  bucket: string,
  key: string,
  file: string,
): Promise<Measured> {
  const { stdout } = await run(
    process.execPath,
    ['--import', 'tsx', 'bench/data-worker.ts', mode, endpoint, bucket, key, file],
    { maxBuffer: 1024 * 1024 },
  );
  const measured = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as Measured;
  return measured;
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
};

export async function benchData(endpoint: string, bytes = GiB, rounds = 3): Promise<DataBench> {
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferry-data-bench-'));
  try {
    const s3 = new S3Client({
      region: 'us-east-1',
      endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    const bucket = `ferry-data-bench-${Date.now()}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    // One file of random bytes, uploaded once as the input and collected as the output.
    const source = path.join(work, 'source.bin');
    await run('sh', ['-c', `head -c ${bytes} /dev/urandom > "$0"`, source]);
    await new Upload({
      client: s3,
      params: { Bucket: bucket, Key: 'inputs/data.bin', Body: fs.createReadStream(source) },
    }).done();
    s3.destroy();

    const stage: Measured[] = [];
    const download: Measured[] = [];
    const collect: Measured[] = [];
    const upload: Measured[] = [];
    for (let round = 0; round < rounds; round++) {
      const target = (name: string) => path.join(work, `${name}-${round}.bin`);
      download.push(await side('download', endpoint, bucket, 'inputs/data.bin', target('download')));
      stage.push(await side('stage', endpoint, bucket, 'inputs/data.bin', target('stage')));
      await fsp.rm(target('download'), { force: true });
      await fsp.rm(target('stage'), { force: true });
      upload.push(await side('upload', endpoint, bucket, `ex_bench${round}`, source));
      collect.push(await side('collect', endpoint, bucket, `ex_bench${round}`, source));
    }
    for (const m of [...stage, ...download, ...collect, ...upload]) {
      if (m.bytes !== bytes) throw new Error(`a side moved ${m.bytes} bytes, not ${bytes}`);
    }
    const rate = (ms: Measured[]) => bytes / MiB / median(ms.map((m) => m.seconds));
    return {
      bytes,
      rounds,
      stageMiBps: rate(stage),
      downloadMiBps: rate(download),
      collectMiBps: rate(collect),
      uploadMiBps: rate(upload),
      stagePeakRssMiB: Math.max(...stage.map((m) => m.peakRssMiB)),
      collectPeakRssMiB: Math.max(...collect.map((m) => m.peakRssMiB)),
      downloadPeakRssMiB: Math.max(...download.map((m) => m.peakRssMiB)),
      uploadPeakRssMiB: Math.max(...upload.map((m) => m.peakRssMiB)),
    };
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}
