import { CreateBucketCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Readable } from 'node:stream';
import type { Env } from './config.js';

/**
 * The S3-compatible store holding build logs and snapshots. One client for AWS S3, MinIO, R2 or s3rver.
 * Checksums are computed only when required: with the SDK's newer default, some stores keep the aws-chunked
 * framing inside the object.
 */
export class ObjectStore {
  readonly client: S3Client;
  readonly bucket: string;
  private bucketReady?: Promise<void>;

  constructor(env: Pick<Env, 'IMGBUILDER_S3_ENDPOINT' | 'IMGBUILDER_S3_BUCKET' | 'IMGBUILDER_S3_REGION' | 'IMGBUILDER_S3_FORCE_PATH_STYLE' | 'AWS_ACCESS_KEY_ID' | 'AWS_SECRET_ACCESS_KEY'>) {
    const endpoint = env.IMGBUILDER_S3_ENDPOINT || undefined;
    let credentials: { accessKeyId: string; secretAccessKey: string } | undefined;
    if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) credentials = { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY };
    else if (endpoint && isLoopback(endpoint)) credentials = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
    this.client = new S3Client({
      endpoint,
      region: env.IMGBUILDER_S3_REGION,
      forcePathStyle: env.IMGBUILDER_S3_FORCE_PATH_STYLE ?? Boolean(endpoint),
      credentials,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 2,
    });
    this.bucket = env.IMGBUILDER_S3_BUCKET;
  }

  /** Creates the bucket if missing; retried on the next call after a failure. */
  ensureBucket(): Promise<void> {
    this.bucketReady ??= (async () => {
      try {
        await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      } catch (err) {
        const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
        if (status !== 404 && (err as Error).name !== 'NotFound' && (err as Error).name !== 'NoSuchBucket') throw err;
        await this.client.send(new CreateBucketCommand({ Bucket: this.bucket })).catch((e: Error) => {
          if (e.name !== 'BucketAlreadyOwnedByYou' && e.name !== 'BucketAlreadyExists') throw e;
        });
      }
    })().catch((err) => {
      this.bucketReady = undefined;
      throw err;
    });
    return this.bucketReady;
  }

  async put(key: string, body: Buffer | string, contentType = 'text/plain; charset=utf-8', bucket = this.bucket): Promise<void> {
    await this.ensureBucket();
    // A known length keeps the SDK from streaming with unknown size (and warning about it).
    await this.client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: contentType, ContentLength: Buffer.byteLength(body) }));
  }

  async getStream(key: string, bucket = this.bucket): Promise<Readable> {
    const res = await this.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return res.Body as Readable;
  }

  /** Bytes [start, end) of an object (to its end without `end`); an empty stream when `start` is past it. */
  async getRange(key: string, start: number, end?: number): Promise<Readable | undefined> {
    if (end !== undefined && end <= start) return undefined;
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${start}-${end === undefined ? '' : end - 1}` }));
      return res.Body as Readable;
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 416) return undefined;
      throw err;
    }
  }

  /** An object's size in bytes; undefined when it does not exist. */
  async size(key: string): Promise<number | undefined> {
    try {
      return (await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }))).ContentLength ?? 0;
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404 || (err as Error).name === 'NotFound') return undefined;
      throw err;
    }
  }

  /** A GET URL anyone holding it can use until it expires. */
  presignGet(key: string, ttlMs: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: key }), { expiresIn: Math.max(1, Math.floor(ttlMs / 1000)) });
  }
}

function isLoopback(url: string): boolean {
  try {
    const h = new URL(url).hostname;
    return h === 'localhost' || h.startsWith('127.') || h === '[::1]';
  } catch {
    return false;
  }
}
