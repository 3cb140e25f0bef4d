// ObjectStore on S3: streamed multipart uploads, ranged reads, presigned download links.

import type { Readable } from 'node:stream';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  NoSuchKey,
  NotFound,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { StorageAccessDenied } from '../../errors.ts';
import type { ObjectInfo, ObjectStore } from '../../ports.ts';

/** S3's ways of saying there is no such object. */
export const isMissing = (error: unknown): boolean =>
  error instanceof NoSuchKey ||
  error instanceof NotFound ||
  (error instanceof S3ServiceException &&
    (error.$metadata.httpStatusCode === 404 || error.name === 'NoSuchKey'));

const isDenied = (error: unknown): boolean =>
  error instanceof S3ServiceException &&
  (error.$metadata.httpStatusCode === 403 || error.name === 'AccessDenied' || error.name === 'Forbidden');

export class S3ObjectStore implements ObjectStore {
  private readonly s3: S3Client;

  constructor(
    private readonly bucket: string,
    client?: S3Client,
  ) {
    this.s3 = client ?? new S3Client({});
  }

  async put(
    key: string,
    body: Buffer | string | Readable,
    contentType = 'application/octet-stream',
  ): Promise<void> {
    // Upload streams in parts, so a large Readable never has to fit in memory.
    await new Upload({
      client: this.s3,
      params: { Bucket: this.bucket, Key: key, Body: body, ContentType: contentType },
      queueSize: 2,
      partSize: 8 * 1024 * 1024,
    }).done();
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      const reply = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return Buffer.from((await reply.Body?.transformToByteArray()) ?? []);
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw this.explained(error, key);
    }
  }

  async getRange(key: string, start: number, end: number): Promise<Buffer | undefined> {
    if (end <= start) return Buffer.alloc(0);
    try {
      const reply = await this.s3.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${start}-${end - 1}` }),
      );
      return Buffer.from((await reply.Body?.transformToByteArray()) ?? []);
    } catch (error) {
      if (isMissing(error)) return undefined;
      if (error instanceof S3ServiceException && error.$metadata.httpStatusCode === 416)
        return Buffer.alloc(0);
      throw this.explained(error, key);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const reply = await this.s3.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { key, size: reply.ContentLength ?? 0 };
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw this.explained(error, key);
    }
  }

  /**
   * A read S3 refused: without s3:ListBucket a missing key answers 403 too, so the error says
   * which grants tell the two apart rather than passing for an outage.
   */
  private explained(error: unknown, key: string): unknown {
    if (!isDenied(error)) return error;
    return new StorageAccessDenied(
      `reading s3://${this.bucket}/${key} was denied: the object is missing or this role may not read it; ` +
        `a missing object reads as denied unless the role has s3:ListBucket on the bucket ` +
        `(for the prefix ${key.split('/')[0]}/) beside s3:GetObject on the key`,
      { cause: error },
    );
  }

  async list(prefix: string): Promise<readonly ObjectInfo[]> {
    const found: ObjectInfo[] = [];
    let token: string | undefined;
    do {
      const reply = await this.s3.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: prefix,
          ...(token === undefined ? {} : { ContinuationToken: token }),
        }),
      );
      for (const object of reply.Contents ?? []) {
        if (object.Key !== undefined) found.push({ key: object.Key, size: object.Size ?? 0 });
      }
      token = reply.IsTruncated ? reply.NextContinuationToken : undefined;
    } while (token !== undefined);
    return found;
  }

  async deletePrefix(prefix: string): Promise<void> {
    const objects = await this.list(prefix);
    for (let i = 0; i < objects.length; i += 1000) {
      await this.s3.send(
        new DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: objects.slice(i, i + 1000).map((o) => ({ Key: o.key })), Quiet: true },
        }),
      );
    }
  }

  async delete(key: string): Promise<void> {
    // S3 answers a missing key with success: nothing to tell apart.
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  /** Copies to a key in this bucket, or to `s3://bucket/key` anywhere the role may write. */
  async copy(sourceKey: string, destination: string): Promise<void> {
    const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(destination);
    const [bucket, key] = match ? [match[1] ?? '', match[2] ?? ''] : [this.bucket, destination];
    await this.s3.send(
      new CopyObjectCommand({
        Bucket: bucket,
        Key: key,
        CopySource: `${this.bucket}/${sourceKey.split('/').map(encodeURIComponent).join('/')}`,
      }),
    );
  }

  async putAt(destination: string, body: string, contentType: string): Promise<void> {
    const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(destination);
    if (!match) throw new Error(`not an s3:// destination: ${destination}`);
    await this.s3.send(
      new PutObjectCommand({ Bucket: match[1], Key: match[2], Body: body, ContentType: contentType }),
    );
  }

  async downloadUrl(key: string, expiresSeconds: number): Promise<string> {
    return getSignedUrl(this.s3, new GetObjectCommand({ Bucket: this.bucket, Key: key }), {
      expiresIn: expiresSeconds,
    });
  }
}
