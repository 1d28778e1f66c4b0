import { describe, expect, it } from 'vitest';
import { stagesOf } from '../../apps/worker/src/builder/dockerfile-stages.js';

describe('Dockerfile stages for the layer cache', () => {
  it('names stages, follows FROM and --from between them, and keeps only what the final stage needs', () => {
    const parsed = stagesOf(
      [
        'ARG BASE=busybox:1',
        'FROM $BASE AS Deps',
        'RUN   make \\',
        '  deps   # comment',
        'FROM busybox:1 AS unused',
        'RUN echo never built',
        'FROM deps AS build',
        'RUN --mount=type=cache,target=/c,from=deps make',
        'FROM --platform=linux/amd64 scratch',
        'COPY --from=build /out /out',
        '',
      ].join('\n'),
    )!;
    expect(parsed.stages.map((s) => s.name)).toEqual(['deps', 'unused', 'build', undefined]);
    expect(parsed.stages[0].from).toEqual({ image: 'busybox:1', flags: [] });
    expect(parsed.stages[0].instructions).toEqual(['RUN make deps # comment']);
    expect(parsed.stages[2].from).toEqual({ stage: 0 });
    expect(parsed.stages[2].uses).toEqual([0]);
    expect(parsed.stages[3]).toMatchObject({ from: { image: 'scratch', flags: ['--platform=linux/amd64'] }, uses: [2] });
    expect(parsed.needed).toEqual([0, 2, 3]);
  });

  it('whitespace and comment lines do not change a stage; an instruction does', () => {
    const a = stagesOf('FROM x\n# note\nRUN  a   b\n')!.stages[0].instructions;
    expect(stagesOf('FROM x\nRUN a b\n')!.stages[0].instructions).toEqual(a);
    expect(stagesOf('FROM x\nRUN a c\n')!.stages[0].instructions).not.toEqual(a);
    expect(stagesOf('RUN nothing\n')).toBeUndefined();
  });
});
