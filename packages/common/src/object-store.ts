import { CreateBucketCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, PutObjectCommand, S3Client, type HeadObjectCommandOutput } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Readable } from 'node:stream';
import type { Env } from './config.js';
import { StorageUnavailable } from './errors.js';

export interface ObjectStoreOptions {
  /** S3-compatible endpoint (IMGBUILDER_S3_ENDPOINT); empty or absent: AWS S3. */
  endpoint?: string;
  /** IMGBUILDER_S3_BUCKET */
  bucket: string;
  /** IMGBUILDER_S3_REGION */
  region: string;
  /** Path-style addressing (IMGBUILDER_S3_FORCE_PATH_STYLE); default: true when an endpoint is set. */
  forcePathStyle?: boolean;
  /**
   * AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Default: s3rver's on a loopback endpoint, else the SDK's own chain
   * (instance roles and the like).
   */
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Every call ends within this long, answered or not (IMGBUILDER_S3_TIMEOUT); default 10s. */
  timeoutMs?: number;
}

/** The object store's settings from the parsed configuration. */
export function objectStoreOptions(env: Pick<Env, 'IMGBUILDER_S3_ENDPOINT' | 'IMGBUILDER_S3_BUCKET' | 'IMGBUILDER_S3_REGION' | 'IMGBUILDER_S3_FORCE_PATH_STYLE' | 'AWS_ACCESS_KEY_ID' | 'AWS_SECRET_ACCESS_KEY' | 'IMGBUILDER_S3_TIMEOUT'>): ObjectStoreOptions {
  return {
    endpoint: env.IMGBUILDER_S3_ENDPOINT,
    bucket: env.IMGBUILDER_S3_BUCKET,
    region: env.IMGBUILDER_S3_REGION,
    forcePathStyle: env.IMGBUILDER_S3_FORCE_PATH_STYLE,
    credentials: env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY ? { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY } : undefined,
    timeoutMs: env.IMGBUILDER_S3_TIMEOUT,
  };
}

/** A streamed object body with its length in bytes, which S3 needs up front. */
export interface SizedStream {
  stream: Readable;
  length: number;
}

/** The HTTP status an S3 SDK error carries, if any. */
export function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

/**
 * The S3-compatible store holding build logs and snapshots. One client for AWS S3, MinIO, R2 or s3rver.
 * Checksums are computed only when required: with the SDK's newer default, some stores keep the aws-chunked
 * framing inside the object.
 */
export class ObjectStore {
  readonly client: S3Client;
  readonly bucket: string;
  private bucketReady?: Promise<void>;

  /** Every call to the store ends within this long, answered or not: a store that hangs fails like one that is down. */
  readonly timeoutMs: number;

  constructor(opts: ObjectStoreOptions) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    const endpoint = opts.endpoint || undefined;
    let credentials = opts.credentials;
    if (!credentials && endpoint && isLoopback(endpoint)) credentials = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
    this.client = new S3Client({
      endpoint,
      region: opts.region,
      forcePathStyle: opts.forcePathStyle ?? Boolean(endpoint),
      credentials,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 2,
      // The socket timeouts catch a store that accepts connections but never answers; `send` adds an overall deadline.
      requestHandler: { connectionTimeout: this.timeoutMs, requestTimeout: this.timeoutMs },
    });
    this.bucket = opts.bucket;
  }

  /** Creates the bucket if missing; retried on the next call after a failure. */
  ensureBucket(): Promise<void> {
    this.bucketReady ??= (async () => {
      try {
        await this.withDeadline((o) => this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), o));
      } catch (err) {
        if (httpStatus(err) !== 404 && (err as Error).name !== 'NotFound' && (err as Error).name !== 'NoSuchBucket') throw err;
        await this.withDeadline((o) => this.client.send(new CreateBucketCommand({ Bucket: this.bucket }), o)).catch((e: Error) => {
          if (e.name !== 'BucketAlreadyOwnedByYou' && e.name !== 'BucketAlreadyExists') throw e;
        });
      }
    })().catch((err) => {
      this.bucketReady = undefined;
      throw err;
    });
    return this.bucketReady;
  }

  /** Stores an object; a stream body comes with its length. The caller ends a stream the call left unread. */
  async put(key: string, body: Buffer | string | SizedStream, contentType = 'text/plain; charset=utf-8', opts: { bucket?: string; metadata?: Record<string, string> } = {}): Promise<void> {
    await this.ensureBucket();
    // A known length keeps the SDK from streaming with unknown size (and warning about it).
    const sized = typeof body === 'string' || Buffer.isBuffer(body) ? { stream: body, length: Buffer.byteLength(body) } : body;
    const { bucket = this.bucket, metadata } = opts;
    // Room for the body at a slow 1 MiB/s on top of the usual deadline: a 64 MiB log is not a hung store.
    await this.withDeadline(
      (o) =>
        this.client.send(
          new PutObjectCommand({ Bucket: bucket, Key: key, Body: sized.stream, ContentType: contentType, ContentLength: sized.length, ...(metadata ? { Metadata: metadata } : {}) }),
          o,
        ),
      this.timeoutMs * 2 + Math.ceil(sized.length / 1024),
    );
  }

  /** The object's body; the deadline covers the response headers, the body then streams at the reader's pace. */
  async getStream(key: string, bucket = this.bucket): Promise<Readable> {
    const res = await this.withDeadline((o) => this.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), o));
    return res.Body as Readable;
  }

  /** Bytes [from, to) of an object (fewer when it is shorter), and its whole length. */
  async getRange(key: string, from: number, to: number): Promise<{ bytes: Buffer; total: number }> {
    if (to <= from) return { bytes: Buffer.alloc(0), total: -1 };
    try {
      const res = await this.withDeadline((o) => this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${from}-${to - 1}` }), o));
      const bytes = Buffer.from(await res.Body!.transformToByteArray());
      const total = Number(/\/(\d+)$/.exec(res.ContentRange ?? '')?.[1] ?? from + bytes.length);
      return { bytes, total };
    } catch (err) {
      // 416: the object is shorter than `from`.
      if (httpStatus(err) === 416) return { bytes: Buffer.alloc(0), total: 0 };
      throw err;
    }
  }

  /** An object's size in bytes; undefined when it does not exist. */
  async size(key: string): Promise<number | undefined> {
    const head = await this.head(key);
    return head && (head.ContentLength ?? 0);
  }

  /** An object's user metadata (`x-amz-meta-*`, names without the prefix); undefined when it does not exist. */
  async metadata(key: string): Promise<Record<string, string> | undefined> {
    const head = await this.head(key);
    return head && (head.Metadata ?? {});
  }

  private async head(key: string): Promise<HeadObjectCommandOutput | undefined> {
    try {
      return await this.withDeadline((o) => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), o));
    } catch (err) {
      if (httpStatus(err) === 404 || (err as Error).name === 'NotFound') return undefined;
      throw err;
    }
  }

  /**
   * Runs one SDK call with a deadline: aborted after `deadlineMs` (default twice the socket timeout, room for the
   * SDK's one retry). Uploads of large files pass their own.
   */
  async withDeadline<T>(call: (opts: { abortSignal: AbortSignal }) => Promise<T>, deadlineMs = this.timeoutMs * 2): Promise<T> {
    // Cleared once the call resolves: a GET's body then streams at the reader's pace (the socket timeout still holds).
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), deadlineMs);
    try {
      return await call({ abortSignal: ctl.signal });
    } catch (err) {
      if (ctl.signal.aborted) throw new StorageUnavailable(`the object store did not answer within ${deadlineMs} ms (IMGBUILDER_S3_TIMEOUT); retry later`, err);
      throw err;
    } finally {
      clearTimeout(timer);
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
