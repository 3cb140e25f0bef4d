// Entry point of Ferry's runner image, for two containers of a Fargate task. With no argument
// it is the publisher: everything it needs comes from its environment (which execution, where
// its result goes — upload links from Ferry's API, or a bucket — which limits, which outputs).
// With `stage` it is the stage container, which fetches the job's inputs first.
import { S3Client } from '@aws-sdk/client-s3';
import { S3ObjectStore } from '../shared/adapters/aws/s3-object-store.ts';
import { UploadLinkStore } from '../shared/adapters/aws/upload-link-store.ts';
import { loadPublisherConfig, type PublisherConfig } from '../shared/config.ts';
import { createLogger, type Logger } from '../shared/logger.ts';
import type { ResultSink } from '../shared/ports.ts';
import { publish } from '../shared/runner/publisher.ts';
import { runStage } from './stage-main.ts';

if (process.argv[2] === 'stage') process.exit(await runStage());

let config: ReturnType<typeof loadPublisherConfig>;
try {
  config = loadPublisherConfig(process.env);
} catch (error) {
  process.stderr.write(`ferry publisher: ${(error as Error).message}\n`);
  process.exit(2);
}
const log = createLogger(config.logLevel, (line) => process.stdout.write(line));
function resultSink(config: PublisherConfig, log: Logger): ResultSink {
  const target = config.target;
  if (target.kind === 'links') {
    // Signed as the task role through the standard credential chain; the secret says which execution.
    return new UploadLinkStore({
      apiUrl: target.apiUrl,
      executionId: config.executionId,
      uploadSecret: target.uploadSecret,
      region: config.region,
      log,
    });
  }
  return new S3ObjectStore(
    target.bucket,
    new S3Client({ region: config.region, forcePathStyle: target.forcePathStyle }),
  );
}

const stopped = new Promise<void>((resolve) => {
  process.once('SIGTERM', () => resolve());
  process.once('SIGINT', () => resolve());
});

try {
  const manifest = await publish({
    executionId: config.executionId,
    ioDir: config.ioDir,
    ...(config.steps === undefined ? {} : { steps: config.steps }),
    limits: config.limits,
    outputs: { list: config.outputs, dataRoot: config.dataRoot },
    objects: resultSink(config, log),
    log,
    flushSeconds: config.flushSeconds,
    stopGraceSeconds: config.stopGraceSeconds,
    stopped,
  });
  log.info('result stored', {
    executionId: config.executionId,
    exitCode: manifest.exitCode,
    stdoutBytes: manifest.stdout.totalBytes,
    stderrBytes: manifest.stderr.totalBytes,
    partial: manifest.partial,
  });
  process.exit(0);
} catch (error) {
  log.error('could not store the result', { executionId: config.executionId, error });
  process.exit(1);
}
