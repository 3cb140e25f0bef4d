// One side of the data benchmark, in a process of its own so its peak memory is its own:
// `stage` fetches an S3 object the way Ferry stages an input, `download` with a plain SDK
// GetObject; `collect` stores a file the way Ferry collects an output, `upload` with a plain
// SDK Upload. Prints {"seconds":…,"bytes":…,"peakRssMiB":…} on stdout.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { S3ObjectStore } from '../shared/adapters/aws/s3-object-store.ts';
import { SdkS3Source } from '../shared/adapters/aws/s3-source.ts';
import { InputSources } from '../shared/staging/inputs.ts';
import { collectOutputs } from '../shared/staging/outputs.ts';

const [mode = '', endpoint = '', bucket = '', key = '', file = ''] = process.argv.slice(2);
const s3 = new S3Client({
  region: 'us-east-1',
  endpoint,
  forcePathStyle: true,
  credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
});

function peakRssMiB(): number {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}

const started = performance.now();
let bytes = 0;
if (mode === 'stage') {
  const sources = new InputSources({ s3: new SdkS3Source(s3) });
  ({ bytes } = await sources.fetch({ url: `s3://${bucket}/${key}`, path: '/in', type: 'FILE' }, file, {
    maxBytes: 4 * 1024 ** 3,
  }));
} else if (mode === 'download') {
  const reply = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  await pipeline(reply.Body as Readable, fs.createWriteStream(file, { flags: 'wx' }));
  bytes = (await fsp.stat(file)).size;
} else if (mode === 'collect') {
  const [result] = await collectOutputs(
    key,
    [{ path: '/out/data.bin', name: 'data.bin', type: 'FILE' }],
    async () => file,
    new S3ObjectStore(bucket, s3),
    { outputBytes: 4 * 1024 ** 3, outputsBytes: 4 * 1024 ** 3, outputFiles: 10 },
  );
  bytes = result?.bytes ?? 0;
} else if (mode === 'upload') {
  await new Upload({
    client: s3,
    params: { Bucket: bucket, Key: `plain/${path.basename(file)}`, Body: fs.createReadStream(file) },
  }).done();
  bytes = (await fsp.stat(file)).size;
} else {
  throw new Error(`unknown mode ${mode}`);
}
const seconds = (performance.now() - started) / 1000;
process.stdout.write(`${JSON.stringify({ seconds, bytes, peakRssMiB: peakRssMiB() })}\n`);
s3.destroy();
