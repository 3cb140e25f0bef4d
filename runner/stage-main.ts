// The stage container's work (`stage`): reads its orders from the environment, fetches the
// job's inputs with the task role's credentials, and gives the exit code ECS judges the
// job's dependency on.
import { S3Client } from '@aws-sdk/client-s3';
import { SdkS3Source } from '../shared/adapters/aws/s3-source.ts';
import { loadStageConfig } from '../shared/config.ts';
import { createLogger } from '../shared/logger.ts';
import { stageInputs, writeExitRecord } from '../shared/runner/stage.ts';
import { InputSources } from '../shared/staging/inputs.ts';

export async function runStage(): Promise<number> {
  let config: ReturnType<typeof loadStageConfig>;
  try {
    config = loadStageConfig(process.env);
  } catch (error) {
    const reason = `Ferry's stage container could not start: ${(error as Error).message}`;
    process.stderr.write(`ferry stage: ${reason}\n`);
    // The job's container will not start: the publisher learns why from the exit record.
    await writeExitRecord(process.env.FERRY_IO_DIR ?? '/ferry/io', {
      exitCode: null,
      signal: null,
      timedOut: false,
      startError: reason,
    }).catch(() => undefined);
    return 2;
  }
  const log = createLogger(config.logLevel, (line) => process.stdout.write(line));
  const stop = new AbortController();
  process.once('SIGTERM', () => stop.abort());
  process.once('SIGINT', () => stop.abort());
  const s3 = new S3Client({
    region: config.region,
    forcePathStyle: config.s3ForcePathStyle,
    // Input buckets may be in another region than the deployment.
    followRegionRedirects: true,
  });
  const staged = await stageInputs({
    executionId: config.executionId,
    order: config.order,
    dataRoot: config.dataRoot,
    ioDir: config.ioDir,
    fetcher: new InputSources({ s3: new SdkS3Source(s3) }),
    log,
    signal: stop.signal,
  });
  return staged ? 0 : 1;
}
