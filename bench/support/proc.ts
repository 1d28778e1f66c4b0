import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Resident set size of a process in MiB (VmRSS from /proc/<pid>/status), or NaN once it is gone. */
export function rssMiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** CPU time (user + system) a process has used so far, in ms. */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields overall.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
}

/** Samples a process's RSS until stopped; returns the peak. */
export function rssSampler(pid: number, everyMs = 100): { stop(): number } {
  let peak = rssMiB(pid);
  const t = setInterval(() => {
    const v = rssMiB(pid);
    if (v > peak || !Number.isFinite(peak)) peak = v;
  }, everyMs);
  return {
    stop() {
      clearInterval(t);
      const v = rssMiB(pid);
      return v > peak ? v : peak;
    },
  };
}

/**
 * Samples a process's established TCP connections to `port` (with `ss`) until stopped; returns how many distinct
 * connections (local ports) it saw. A pool that reuses its connections shows about its size; a client that opens a
 * connection per request shows far more, growing with the sampling time.
 */
export function connectionSampler(pid: number, port: number, everyMs = 200): { stop(): Promise<{ distinct: number; samples: number }> } {
  const seen = new Set<string>();
  let samples = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const out = await new Promise<string>((resolve) =>
        execFile('ss', ['-Htnp', 'state', 'established', `( dport = :${port} )`], { timeout: 5_000 }, (err, stdout) => resolve(err ? '' : stdout)),
      );
      samples++;
      for (const line of out.split('\n')) {
        if (!line.includes(`pid=${pid},`)) continue;
        const local = line.trim().split(/\s+/)[2];
        if (local) seen.add(local);
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { distinct: seen.size, samples };
    },
  };
}
