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

  seal(value: unknown): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const body = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
  }

  open<T>(sealed: string): T {
    const buf = Buffer.from(sealed, 'base64');
    const decipher = createDecipheriv('aes-256-gcm', this.key, buf.subarray(0, 12));
    decipher.setAuthTag(buf.subarray(12, 28));
    const plain = Buffer.concat([decipher.update(buf.subarray(28)), decipher.final()]);
    return JSON.parse(plain.toString('utf8')) as T;
  }
}
