import { describe, expect, test } from '@jest/globals';
import { parseCacheRef, stepTag } from '../../src/engine/registry-step-cache.js';

// The registry step cache's location syntax (docs/step-cache.md); the cache itself is tested against a
// real registry in test/integration/registry-step-cache.itg.test.ts.
describe('parseCacheRef', () => {
  test.each([
    ['registry:127.0.0.1:5000/acme/cache', { registry: '127.0.0.1:5000', repository: 'acme/cache', text: '127.0.0.1:5000/acme/cache' }],
    ['registry:ghcr.io/acme/build-cache', { registry: 'ghcr.io', repository: 'acme/build-cache', text: 'ghcr.io/acme/build-cache' }],
    [' registry:localhost/c ', { registry: 'localhost', repository: 'c', text: 'localhost/c' }],
  ])('%s', (spec, want) => {
    expect(parseCacheRef(spec)).toEqual(want);
  });

  test.each([
    ['ghcr.io/acme/cache', /write registry:HOST\/REPOSITORY/],
    ['type=registry,ref=ghcr.io/acme/cache', /write registry:HOST\/REPOSITORY/],
    ['registry:ghcr.io/acme/cache:latest', /name a repository without a tag or digest/],
    [`registry:ghcr.io/acme/cache@sha256:${'a'.repeat(64)}`, /name a repository without a tag or digest/],
    ['registry:acme/cache', /the first part must be a registry host/],
    ['registry:ghcr.io/Acme/Cache', /invalid repository name/],
  ])('%s is refused in one line', (spec, want) => {
    let msg = '';
    try {
      parseCacheRef(spec);
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toMatch(want);
    expect(msg).not.toContain('\n');
  });

  test('a step key is a valid OCI tag', () => {
    const tag = stepTag('f'.repeat(64));
    expect(tag).toBe(`step-${'f'.repeat(64)}`);
    expect(tag).toMatch(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/);
  });
});
