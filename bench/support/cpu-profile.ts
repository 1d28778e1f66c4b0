import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  file: string;
  /** Profiled wall time and the share of it the process was busy (not idle), in ms. */
  wallMs: number;
  busyMs: number;
  /** Self time by area: an npm package, node internals, an imgbuilder source file, GC. Percent of busy time. */
  areas: { area: string; pct: number }[];
  /** Functions with the most self time. Percent of busy time. */
  functions: { fn: string; pct: number }[];
  /**
   * Self time charged to the innermost imgbuilder function (apps/*, packages/*) on the stack: which of our code
   * paths the time is spent under. Percent of busy time.
   */
  byImgbuilderFrame: { frame: string; pct: number }[];
}

const REPO_FRAME = /\/(?:apps|packages)\/[^/]+\/src\/[^/]+\.ts$/;

/** Where a frame's code lives, coarsely: the npm package, `node:internal`, or the repository file. */
function areaOf(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1];
  if (url.startsWith('node:')) return url.replace(/^node:internal\/([^/]+).*/, 'node:$1');
  const m = /\/work\/[^/]+\/(.+)$/.exec(url) ?? /((?:apps|packages)\/.+)$/.exec(url);
  return m ? m[1] : url;
}

/** Now on the clock V8 stamps profile samples with (CLOCK_MONOTONIC, µs): pass to `summarizeProfile`'s window. */
export const profileClockUs = (): number => Number(process.hrtime.bigint() / 1000n);

/**
 * Self time by function and by area. `window` (profileClockUs() values taken by the bench around the load) keeps
 * only the samples taken under load, so start-up (module loading, TypeScript transpiling) is left out.
 */
export function summarizeProfile(file: string, window?: { fromUs: number; toUs: number }, top = 12): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const repoFrame = (id: number): string => {
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)?.callFrame;
      if (f && REPO_FRAME.test(f.url)) return `${f.functionName || '(anonymous)'} ${areaOf(f.url, f.functionName)}:${f.lineNumber + 1}`;
    }
    return '(no imgbuilder frame: gRPC/HTTP/2 and socket I/O, timers, GC)';
  };
  const self = new Map<number, number>();
  let t = p.startTime;
  let first = Infinity;
  let last = -Infinity;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (window && (t < window.fromUs || t > window.toUs)) continue;
    first = Math.min(first, t);
    last = Math.max(last, t);
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
  }
  const areas = new Map<string, number>();
  const fns = new Map<string, number>();
  const frames = new Map<string, number>();
  let busy = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === '(idle)') continue;
    busy += ms;
    const area = areaOf(url, functionName);
    areas.set(area, (areas.get(area) ?? 0) + ms);
    const key = `${functionName || '(anonymous)'} ${url ? `${areaOf(url, functionName)}:${lineNumber + 1}` : ''}`.trim();
    fns.set(key, (fns.get(key) ?? 0) + ms);
    const rf = repoFrame(id);
    frames.set(rf, (frames.get(rf) ?? 0) + ms);
  }
  const pct = (m: Map<string, number>) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => ({ k, pct: Math.round((1000 * v) / Math.max(busy, 1)) / 10 }));
  return {
    file,
    wallMs: Number.isFinite(last - first) ? (last - first) / 1000 : 0,
    busyMs: Math.round(busy),
    areas: pct(areas).map(({ k, pct }) => ({ area: k, pct })),
    functions: pct(fns).map(({ k, pct }) => ({ fn: k, pct })),
    byImgbuilderFrame: pct(frames).map(({ k, pct }) => ({ frame: k, pct })),
  };
}

/**
 * The newest main-thread `.cpuprofile` in a directory. Node names them CPU.<date>.<time>.<pid>.<thread>.<seq>; tsx's
 * module hooks run on a thread of their own (thread 1) that writes a second, uninteresting profile.
 */
export function newestProfile(dir: string): string | undefined {
  try {
    const files = readdirSync(dir)
      .filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f))
      .map((f) => join(dir, f));
    return files.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
  } catch {
    return undefined;
  }
}

export function describeProfile(s: ProfileSummary, n = 6): string[] {
  return [
    `API CPU profile (${s.file}): busy ${s.busyMs} ms of ${Math.round(s.wallMs)} ms profiled`,
    `  by area: ${s.areas.slice(0, n).map((a) => `${a.area} ${a.pct}%`).join(', ')}`,
    `  top functions: ${s.functions.slice(0, n).map((f) => `${f.fn} ${f.pct}%`).join('; ')}`,
    `  under imgbuilder code: ${s.byImgbuilderFrame.slice(0, n).map((f) => `${f.frame} ${f.pct}%`).join('; ')}`,
  ];
}
