import { describe, expect, it } from 'vitest';
import { baseImagesOf } from '../../apps/worker/src/builder/dockerfile-bases.js';

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
