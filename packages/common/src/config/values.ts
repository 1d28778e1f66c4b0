import { z } from 'zod';
import { parseDuration } from '../duration.js';
import { parseByteSize } from '../byte-size.js';
import { FetchPolicy, type FetchPolicyOptions } from '../fetch-policy.js';

// The kinds of value a setting holds, each parsed and checked once for every area's fields (./*.ts).

export const duration = (fallback: string, max?: number, { zero = false } = {}) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined || ms < 0 || (ms === 0 && !zero)) {
        ctx.addIssue({ code: 'custom', message: `"${text}" is not a duration (use seconds like 900, or 15m, 1h, 7d)` });
        return z.NEVER;
      }
      if (max !== undefined && ms > max) {
        ctx.addIssue({ code: 'custom', message: `"${text}" is longer than the allowed maximum` });
        return z.NEVER;
      }
      return ms;
    });

export const bool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no', ''])
    .optional()
    .transform((v) => (v === undefined || v === '' ? fallback : v === 'true' || v === '1' || v === 'yes'));

export const int = (fallback: number, min: number) => z.coerce.number().int().min(min).default(fallback);

export const list = z
  .string()
  .default('')
  .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean));

/** A size limit that keeps the text it was given, so messages can quote the setting exactly as written. */
export const sizeLimit = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      const bytes = parseByteSize(text);
      if (bytes === undefined || bytes <= 0) {
        ctx.addIssue({ code: 'custom', message: `"${text}" is not a size (use bytes, or 64MiB, 1GiB)` });
        return z.NEVER;
      }
      return { bytes, text: text.trim() };
    });

/** A size in bytes. */
export const byteSize = (fallback: string) => sizeLimit(fallback).transform((v) => v.bytes);

const CIDR_OR_HOST_PORT = /^(\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?|[0-9a-fA-F:]*:[0-9a-fA-F:]*(\/\d{1,3})?|[A-Za-z0-9.-]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}|\d{1,3}(\.\d{1,3}){3}:\d{1,5})$/;

export const egressAllow = list.refine((entries) => entries.every((e) => CIDR_OR_HOST_PORT.test(e)), 'expected comma-separated CIDRs (10.1.0.0/16) or host:port (mirror.internal:443)');

/** A fetch-policy list, checked by the policy's own parser (fetch-policy.ts). */
export const fetchList = (key: keyof FetchPolicyOptions, expected: string) =>
  list.superRefine((entries, ctx) => {
    try {
      new FetchPolicy({ [key]: entries });
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `${(err as Error).message}: expected ${expected}` });
    }
  });

export const CIDR = /^(\d{1,3}(\.\d{1,3}){3}\/\d{1,2}|[0-9a-fA-F:]*:[0-9a-fA-F:]*\/\d{1,3})$/;

export const hostPort = (fallback: string) =>
  z.string().default(fallback).refine((s) => /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/.test(s), 'expected HOST:PORT');

/** `host[:port]/path…` or a Docker Hub style `name/path…`. */
export const isRepository = (s: string) => /^[a-z0-9.-]+(:\d+)?(\/[a-z0-9._-]+)+$/.test(s) || /^[a-z0-9._-]+(\/[a-z0-9._-]+)+$/.test(s);

export const repository = (fallback: string) => z.string().default(fallback).refine(isRepository, 'expected a repository like registry.example.com/team/images');
