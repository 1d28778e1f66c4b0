import { afterEach, describe, expect, it, vi } from 'vitest';
import { KeepaliveRounds, type KeepaliveRound } from '../../apps/api/src/grpc/keepalive-rounds.js';

afterEach(() => vi.useRealTimers());

describe('KeepaliveRounds', () => {
  it('calls every member each round from one timer, making what one key needs once per round', async () => {
    vi.useFakeTimers();
    const rounds = new KeepaliveRounds(1_000);
    const made: string[] = [];
    const sent: string[] = [];
    const member = (name: string, key: string) => (round: KeepaliveRound) =>
      void round
        .once(key, async () => {
          made.push(key);
          return `${key}@${made.length}`;
        })
        .then((m) => sent.push(`${name}:${m}`));
    const stops = [rounds.add(member('a', 'build1')), rounds.add(member('b', 'build1')), rounds.add(member('c', 'build2'))];
    expect(vi.getTimerCount()).toBe(1);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(made).toEqual(['build1', 'build2']);
    expect(sent.sort()).toEqual(['a:build1@1', 'b:build1@1', 'c:build2@2']);
    // A new round makes the message anew.
    stops[2]();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(made).toEqual(['build1', 'build2', 'build1']);
    expect(sent.filter((s) => s.startsWith('c:'))).toHaveLength(1);
    stops[0]();
    stops[1]();
    expect(vi.getTimerCount()).toBe(0);
  });
});
