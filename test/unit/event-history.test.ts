import { describe, expect, it } from 'vitest';
import type { BuildEvent } from '@imgbuilder/common/build-life';
import { eventBytes, EventHistory } from '../../apps/api/src/logs/event-history.js';

const log = (n: number, text = `line ${n}\n`): BuildEvent => ({ id: `1000-${n}`, kind: 'log', text });

describe('EventHistory', () => {
  it('returns the events after a cursor, a page at a time', () => {
    const h = new EventHistory(1 << 20);
    expect(h.empty).toBe(true);
    expect(h.after('0-0', 10)).toEqual([]);
    h.append([log(1), log(2), log(3)]);
    h.append([log(4)]);
    expect(h.after('0-0', 10)?.map((e) => e.id)).toEqual(['1000-1', '1000-2', '1000-3', '1000-4']);
    expect(h.after('1000-2', 10)?.map((e) => e.id)).toEqual(['1000-3', '1000-4']);
    expect(h.after('1000-1', 2)?.map((e) => e.id)).toEqual(['1000-2', '1000-3']);
    expect(h.after('1000-4', 10)).toEqual([]);
    // A cursor between two ids (an event this process never read) continues after it.
    expect(h.after('999-0', 1)?.map((e) => e.id)).toEqual(['1000-1']);
  });

  it('drops its oldest events past its size and then cannot answer for cursors before what it kept', () => {
    const one = eventBytes(log(0, 'x'.repeat(100)));
    const h = new EventHistory(one * 3);
    for (let i = 1; i <= 5_000; i++) h.append([log(i, 'x'.repeat(100))]);
    expect(h.after('0-0', 10)).toBeUndefined();
    expect(h.after('1000-4996', 10)).toBeUndefined();
    expect(h.after('1000-4997', 10)?.map((e) => e.id)).toEqual(['1000-4998', '1000-4999', '1000-5000']);
  });
});
