import { describe, expect, it } from 'vitest';
import { RefCensor } from '@imgbuilder/common/censor';

describe('RefCensor', () => {
  const ref = 'registry.example.com/team/workspace:abc123';

  it('replaces a ref split across chunks, wherever the split falls', () => {
    const text = `pushing ${ref} now\nand ${ref}\n`;
    for (let cut = 0; cut <= text.length; cut++) {
      const c = new RefCensor([ref]);
      const out = c.push(text.slice(0, cut)) + c.push(text.slice(cut)) + c.end();
      expect(out, `split at ${cut}`).toBe('pushing [redacted] now\nand [redacted]\n');
    }
  });

  it('holds back no more than the longest ref, and gives everything back at the end', () => {
    const c = new RefCensor([ref]);
    const head = 'x'.repeat(1000);
    expect(c.push(head).length).toBe(1000 - (ref.length - 1));
    expect(c.end()).toBe('x'.repeat(ref.length - 1));
  });
});
