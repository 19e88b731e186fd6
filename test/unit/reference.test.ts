import { describe, expect, test } from '@jest/globals';
import { normalizeRef } from '../../src/oci/reference.js';
import { pullPlaces } from '../../src/oci/pull-sources.js';
import { UserError } from '../../src/util/errors.js';

const D = `sha256:${'a'.repeat(64)}`;

describe('image references normalized as Docker does (distribution/reference ParseNormalizedNamed + TagNameOnly)', () => {
  test.each([
    ['alpine', 'docker.io/library/alpine:latest', 'docker.io', 'library/alpine', 'latest'],
    ['alpine:3.20', 'docker.io/library/alpine:3.20', 'docker.io', 'library/alpine', '3.20'],
    ['user/app', 'docker.io/user/app:latest', 'docker.io', 'user/app', 'latest'],
    ['user/app:v1_2-rc.3', 'docker.io/user/app:v1_2-rc.3', 'docker.io', 'user/app', 'v1_2-rc.3'],
    ['a/b/c:1', 'docker.io/a/b/c:1', 'docker.io', 'a/b/c', '1'],
    ['docker.io/alpine', 'docker.io/library/alpine:latest', 'docker.io', 'library/alpine', 'latest'],
    ['index.docker.io/user/app:2', 'docker.io/user/app:2', 'docker.io', 'user/app', '2'],
    ['docker.io/library/alpine:3.20', 'docker.io/library/alpine:3.20', 'docker.io', 'library/alpine', '3.20'],
    ['host:5000/x', 'host:5000/x:latest', 'host:5000', 'x', 'latest'],
    ['127.0.0.1:5000/team/base:1', '127.0.0.1:5000/team/base:1', '127.0.0.1:5000', 'team/base', '1'],
    ['localhost/app', 'localhost/app:latest', 'localhost', 'app', 'latest'],
    ['localhost:5000/app:2', 'localhost:5000/app:2', 'localhost:5000', 'app', '2'],
    ['ghcr.io/acme/app:1.0', 'ghcr.io/acme/app:1.0', 'ghcr.io', 'acme/app', '1.0'],
    ['Registry/app', 'Registry/app:latest', 'Registry', 'app', 'latest'],
    ['[::1]:5000/app', '[::1]:5000/app:latest', '[::1]:5000', 'app', 'latest'],
    // A name with no slash is on docker.io: `localhost:5000` alone is the library image localhost, tag 5000.
    ['localhost:5000', 'docker.io/library/localhost:5000', 'docker.io', 'library/localhost', '5000'],
    ['my-app__x.y', 'docker.io/library/my-app__x.y:latest', 'docker.io', 'library/my-app__x.y', 'latest'],
  ])('%s -> %s', (input, full, domain, repository, reference) => {
    const r = normalizeRef(input);
    expect(r).toMatchObject({ full, domain, repository, reference });
    expect(r.digest).toBeUndefined();
  });

  test.each([
    [`alpine@${D}`, `docker.io/library/alpine@${D}`, undefined],
    [`alpine:3.20@${D}`, `docker.io/library/alpine:3.20@${D}`, '3.20'],
    [`host:5000/x@${D}`, `host:5000/x@${D}`, undefined],
  ])('digest kept: %s -> %s (the digest is what is pulled)', (input, full, tag) => {
    const r = normalizeRef(input);
    expect(r.full).toBe(full);
    expect(r.digest).toBe(D);
    expect(r.reference).toBe(D);
    expect(r.tag).toBe(tag);
  });

  test.each([
    ['', /it is empty/],
    ['Alpine', /must be lower-case/],
    ['user/App:1', /must be lower-case/],
    ['a'.repeat(64), /image id, not a name/],
    ['alpine:', /a tag is/],
    ['alpine:.x', /a tag is/],
    [`alpine:${'x'.repeat(129)}`, /a tag is/],
    ['alpine@sha256:abc', /a digest must be/],
    [`alpine@md5:${'a'.repeat(32)}`, /a digest must be/],
    ['-bad/app', /the repository name is/],
    ['app//x', /the repository name is/],
    ['bad_host.:5000/x', /is not a registry host/],
    [`x/${'a'.repeat(260)}`, /longer than 255/],
  ])('refused: %j', (input, why) => {
    expect(() => normalizeRef(input)).toThrow(UserError);
    expect(() => normalizeRef(input)).toThrow(why);
  });
});

describe('where a reference is pulled from: docker.io mirrors first, then the origin; other registries directly', () => {
  const mirrors = ['http://127.0.0.1:5000', 'https://mirror.example'];
  test('docker.io: each mirror in order, then registry-1.docker.io', () => {
    expect(pullPlaces(normalizeRef('alpine:3.20'), mirrors, {})).toEqual([
      { label: 'http://127.0.0.1:5000 (mirror)', host: '127.0.0.1:5000', scheme: 'http', mirror: true },
      { label: 'https://mirror.example (mirror)', host: 'mirror.example', scheme: 'https', mirror: true },
      { label: 'registry-1.docker.io', host: 'registry-1.docker.io', mirror: false },
    ]);
  });
  test('FIREBUILD_DOCKER_IO_REGISTRY moves the origin (what tests use to never reach the internet)', () => {
    expect(pullPlaces(normalizeRef('user/app'), [], { FIREBUILD_DOCKER_IO_REGISTRY: '127.0.0.1:9' })).toEqual([{ label: '127.0.0.1:9', host: '127.0.0.1:9', mirror: false }]);
  });
  test('another registry: only that registry, never a mirror', () => {
    expect(pullPlaces(normalizeRef('ghcr.io/acme/app:1'), mirrors, {})).toEqual([{ label: 'ghcr.io', host: 'ghcr.io', mirror: false }]);
  });
});
