// The stage container's work (`stage`): reads its orders from the environment, fetches the
// job's inputs with the task role's credentials, and gives the exit code ECS judges the
// job's dependency on.
import { S3Client } from '@aws-sdk/client-s3';
import { SdkS3Source } from '../shared/adapters/aws/s3-source.ts';
import { loadStageConfig } from '../shared/config.ts';
import { createLogger } from '../shared/logger.ts';
import { stageInputs } from '../shared/runner/stage.ts';
import { InputSources } from '../shared/staging/inputs.ts';

export async function runStage(): Promise<number> {
  let config: ReturnType<typeof loadStageConfig>;
  try {
    config = loadStageConfig(process.env);
  } catch (error) {
    process.stderr.write(`ferry stage: ${(error as Error).message}\n`);
    return 2;
  }
  const log = createLogger(config.logLevel, (line) => process.stdout.write(line));
  const stop = new AbortController();
  process.once('SIGTERM', () => stop.abort());
  process.once('SIGINT', () => stop.abort());
  const s3 = new S3Client({ region: config.region, forcePathStyle: config.s3ForcePathStyle });
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
