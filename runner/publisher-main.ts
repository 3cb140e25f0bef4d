// Entry point of the publisher container (Ferry's runner image). Everything it needs comes
// from its environment: which execution, which bucket, which limits.
import { S3Client } from '@aws-sdk/client-s3';
import { S3ObjectStore } from '../shared/adapters/aws/s3-object-store.ts';
import { loadPublisherConfig } from '../shared/config.ts';
import { createLogger } from '../shared/logger.ts';
import { publish } from '../shared/runner/publisher.ts';

let config: ReturnType<typeof loadPublisherConfig>;
try {
  config = loadPublisherConfig(process.env);
} catch (error) {
  process.stderr.write(`ferry publisher: ${(error as Error).message}\n`);
  process.exit(2);
}
const log = createLogger(config.logLevel, (line) => process.stdout.write(line));
const stopped = new Promise<void>((resolve) => {
  process.once('SIGTERM', () => resolve());
  process.once('SIGINT', () => resolve());
});

try {
  const manifest = await publish({
    executionId: config.executionId,
    ioDir: config.ioDir,
    limits: config.limits,
    objects: new S3ObjectStore(
      config.bucket,
      new S3Client({ region: config.region, forcePathStyle: config.forcePathStyle }),
    ),
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
