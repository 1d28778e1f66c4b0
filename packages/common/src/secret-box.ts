import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ConfigError } from './config.js';

/** Seals credentials that travel in jobs (AES-256-GCM), so Redis never holds them in plain text. */
export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  /** From IMGBUILDER_SECRET_KEY. In development without one, a fixed key is used: API and workers must agree, and a random key per process could not. */
  static fromEnv(secretKey: string | undefined, nodeEnv: string | undefined): SecretBox {
    if (!secretKey) {
      if (nodeEnv === 'development') return new SecretBox(Buffer.alloc(32, 'imgbuilder-development-only-key!'));
      throw new ConfigError('IMGBUILDER_SECRET_KEY is required (32 random bytes, base64: `openssl rand -base64 32`); set NODE_ENV=development to run without one');
    }
    const key = Buffer.from(secretKey, 'base64');
    if (key.length !== 32) throw new ConfigError('IMGBUILDER_SECRET_KEY must be 32 bytes, base64-encoded (`openssl rand -base64 32`)');
    return new SecretBox(key);
  }

  /**
   * `context` is authenticated, not stored: `open` must be given the same text. Binding a sealed blob to what it was
   * sealed for (a build) means a copy pasted into another job opens nowhere else.
   */
  seal(value: unknown, context = ''): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const body = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
  }

  /** Throws SealedForOtherUse when the blob was sealed under another key or for another context, or was altered. */
  open<T>(sealed: string, context = ''): T {
    const buf = Buffer.from(sealed, 'base64');
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, buf.subarray(0, 12));
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(buf.subarray(12, 28));
      const plain = Buffer.concat([decipher.update(buf.subarray(28)), decipher.final()]);
      return JSON.parse(plain.toString('utf8')) as T;
    } catch {
      throw new SealedForOtherUse();
    }
  }
}

/** A sealed blob that does not open here: another key, another build, or altered. */
export class SealedForOtherUse extends Error {
  override name = 'SealedForOtherUse';
  constructor() {
    super('the sealed credentials do not belong to this build (copied from another job, altered, or sealed under another IMGBUILDER_SECRET_KEY); refused');
  }
}
