import { describe, expect, it } from 'vitest';
import { baseImagesOf, withBases } from '../../apps/worker/src/builder/dockerfile-bases.js';

describe('baseImagesOf', () => {
  it('lists each stage\'s image once, with build-arg defaults, skipping stage names, scratch and unknown variables', () => {
    const df = [
      'ARG REG=registry.example.com:5000',
      'ARG TAG="1.2"',
      'FROM --platform=linux/amd64 ${REG}/team/base:$TAG AS build',
      'RUN make',
      'from build as test',
      'FROM scratch',
      'FROM $UNSET/x',
      'FROM registry.example.com:5000/team/base:1.2',
      'FROM \\',
      '  alpine:3',
      'COPY --from=build /out /out',
    ].join('\n');
    expect(baseImagesOf(df)).toEqual(['registry.example.com:5000/team/base:1.2', 'alpine:3']);
  });
});

describe('withBases', () => {
  it('renames the FROM images it is given, ARG defaults and flags included, and leaves everything else alone', () => {
    const names = new Map([['reg.example/private/base:1', 'imgbuilder-private/abc:base']]);
    const df = ['ARG BASE=reg.example/private/base:1', 'FROM --platform=linux/amd64 ${BASE} AS build', 'RUN echo reg.example/private/base:1', 'FROM reg.example/private/base:1', 'FROM build', 'FROM other/image'].join('\n');
    expect(withBases(df, names).split('\n')).toEqual([
      'ARG BASE=reg.example/private/base:1',
      'FROM --platform=linux/amd64 imgbuilder-private/abc:base AS build',
      'RUN echo reg.example/private/base:1',
      'FROM imgbuilder-private/abc:base',
      'FROM build',
      'FROM other/image',
    ]);
  });
});
