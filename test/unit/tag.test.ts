import { describe, expect, test } from '@jest/globals';
import { formatTag, isValidTag, parseTag } from '../../src/store/tag.js';
import { UserError } from '../../src/util/errors.js';

describe('tags follow the Docker reference grammar, anchored', () => {
  test.each([
    ['acme/web:1.0', { org: 'acme', name: 'web', version: '1.0' }],
    ['acme/web:1.2-rc1', { org: 'acme', name: 'web', version: '1.2-rc1' }],
    ['combust-labs/etcd:3.4.0', { org: 'combust-labs', name: 'etcd', version: '3.4.0' }],
    ['_/alpine:3.12', { org: '_', name: 'alpine', version: '3.12' }],
    ['a.b/c__d:latest', { org: 'a.b', name: 'c__d', version: 'latest' }],
    ['org/name:V_1.x-Y', { org: 'org', name: 'name', version: 'V_1.x-Y' }],
  ])('%s parses and round-trips', (s, want) => {
    const t = parseTag(s);
    expect(t).toEqual(want);
    expect(formatTag(t)).toBe(s);
  });

  test.each([
    'web:1.0', // no org
    'acme/web', // no version
    'Acme/web:1', // upper case org
    'acme/Web:1', // upper case name
    'acme/web:', // empty version
    'acme/web:-1', // version starts with a dash
    'acme/web:1 ', // trailing space: anchored
    ' acme/web:1',
    'acme//web:1',
    'a/b/c:1', // three components
    '../etc:1',
    'acme/..:1',
    'acme/web:1/../../x',
    'acme/-web:1',
    'acme/web.:1',
    `acme/web:${'x'.repeat(129)}`,
    'acme/web:1\nx',
  ])('%j is rejected with a UserError that says how to write a tag', (s) => {
    expect(isValidTag(s)).toBe(false);
    expect(() => parseTag(s)).toThrow(UserError);
    expect(() => parseTag(s)).toThrow(/org\/name:version/);
  });
});
