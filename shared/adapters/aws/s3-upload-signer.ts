// UploadSigner on S3: presigned links for the writes a task's publisher makes (PutObject, the
// multipart calls, DeleteObject). Signing is local and grants nothing by itself: a link works
// only as far as the signing role (the api function's) may do what it names.
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { SignedLink, UploadLinkRequest } from '../../domain/upload-links.ts';
import type { UploadSigner } from '../../ports.ts';

/**
 * By default the SDK puts a checksum of the (empty) body it signs into a presigned PutObject or
 * UploadPart link, and S3 then refuses every real body: links are signed by a client that adds
 * checksums only when an operation requires one.
 */
export const PRESIGNING_CONFIG = { requestChecksumCalculation: 'WHEN_REQUIRED' } as const;

export class S3UploadSigner implements UploadSigner {
  private readonly s3: S3Client;

  /** `client`, if given, must be configured with PRESIGNING_CONFIG. */
  constructor(
    private readonly bucket: string,
    client?: S3Client,
  ) {
    this.s3 = client ?? new S3Client(PRESIGNING_CONFIG);
  }

  async sign(request: UploadLinkRequest, expiresSeconds: number): Promise<SignedLink> {
    if ((await this.s3.config.requestChecksumCalculation()) !== 'WHEN_REQUIRED') {
      throw new Error(
        'upload links must be signed by an S3 client with requestChecksumCalculation WHEN_REQUIRED',
      );
    }
    const Bucket = this.bucket;
    const Key = request.key;
    const options = { expiresIn: expiresSeconds };
    // The content type is signed as a header: the upload must send that one.
    const typed = (contentType: string) => ({ 'content-type': contentType });
    switch (request.action) {
      case 'put':
        return {
          method: 'PUT',
          url: await getSignedUrl(
            this.s3,
            new PutObjectCommand({ Bucket, Key, ContentType: request.contentType }),
            { ...options, signableHeaders: new Set(['content-type']) },
          ),
          headers: typed(request.contentType),
        };
      case 'createMultipart':
        return {
          method: 'POST',
          url: await getSignedUrl(
            this.s3,
            new CreateMultipartUploadCommand({ Bucket, Key, ContentType: request.contentType }),
            { ...options, signableHeaders: new Set(['content-type']) },
          ),
          headers: typed(request.contentType),
        };
      case 'uploadPart':
        return {
          method: 'PUT',
          url: await getSignedUrl(
            this.s3,
            new UploadPartCommand({
              Bucket,
              Key,
              UploadId: request.uploadId,
              PartNumber: request.partNumber,
            }),
            options,
          ),
          headers: {},
        };
      case 'completeMultipart':
        return {
          method: 'POST',
          url: await getSignedUrl(
            this.s3,
            new CompleteMultipartUploadCommand({ Bucket, Key, UploadId: request.uploadId }),
            options,
          ),
          headers: {},
        };
      case 'abortMultipart':
        return {
          method: 'DELETE',
          url: await getSignedUrl(
            this.s3,
            new AbortMultipartUploadCommand({ Bucket, Key, UploadId: request.uploadId }),
            options,
          ),
          headers: {},
        };
      case 'delete':
        return {
          method: 'DELETE',
          url: await getSignedUrl(this.s3, new DeleteObjectCommand({ Bucket, Key }), options),
          headers: {},
        };
    }
  }
}
