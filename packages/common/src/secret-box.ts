import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { SealedForOtherUse } from './errors.js';

/** NODE_ENV=development's key when IMGBUILDER_SECRET_KEY is unset: public, so the API refuses it beyond loopback. */
const DEVELOPMENT_KEY = Buffer.alloc(32, 'imgbuilder-development-only-key!');

const masterKey = (secretKey: string | undefined) => (secretKey ? Buffer.from(secretKey, 'base64') : DEVELOPMENT_KEY);

/**
 * A key of its own for one purpose (dashboard sessions, log tokens), derived from IMGBUILDER_SECRET_KEY with HKDF-SHA256:
 * one secret to manage, and a key leaked or rotated for one purpose says nothing about the others.
 */
export function deriveKey(secretKey: string | undefined, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey(secretKey), Buffer.alloc(0), `imgbuilder ${purpose}`, 32));
}

/** Seals credentials that travel in jobs (AES-256-GCM), so Redis never holds them in plain text. */
export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  /**
   * From IMGBUILDER_SECRET_KEY, as the config schema (config.ts) validated it: 32 bytes, base64, and absent only with
   * NODE_ENV=development. Without one a fixed key is used: API and workers must agree, and a random key per process
   * could not.
   */
  static fromKey(secretKey: string | undefined): SecretBox {
    return new SecretBox(masterKey(secretKey));
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
