import { gitSourceUrl, publishAnnotations, sourceDateEpoch } from '../../src/commands/supply.js';
import { ImageMetadataSchema, type ImageMetadata } from '../../src/store/metadata.js';
import { publishedMetadata } from '../../src/store/package.js';
import type { StoredImage } from '../../src/store/provider.js';

/** What a publish says about an image: the manifest's org.opencontainers.image.* annotations, the metadata as published. */
const meta = (source: ImageMetadata['source'], build?: ImageMetadata['build']): ImageMetadata => ImageMetadataSchema.parse({
  schemaVersion: 1, tag: 'acme/app:1.2.3', type: 'rootfs', created: '2024-05-01T10:11:12.345Z', source, parents: [], config: {},
  ...(build ? { build } : {}), rootfs: { file: 'rootfs.ext4', sha256: 'a'.repeat(64), apparentSize: 1 },
});
const image = (m: ImageMetadata): StoredImage => ({ tag: m.tag, dir: '/x', rootfsPath: '/x/rootfs.ext4', metadataPath: '/x/metadata.json', metadata: m });

describe('org.opencontainers.image.* annotations', () => {
  test.each([
    ['git+https://github.com/acme/app.git:/Dockerfile#v1', 'https://github.com/acme/app'],
    ['git+https://user:tok3n@git.example.com:8443/g/app.git:/build/Dockerfile', 'https://git.example.com:8443/g/app'],
    ['ssh://git@github.com/acme/app.git:/Dockerfile', 'https://github.com/acme/app'],
    ['git+ssh://git@github.com:2222/acme/app:/Dockerfile#main', 'https://github.com/acme/app'],
    ['git://example.org/app.git:/Dockerfile', 'https://example.org/app'],
    ['./Dockerfile', undefined],
    ['/home/ci/work/app/Dockerfile', undefined],
    ['https://example.org/Dockerfile', undefined],
  ])('the source of %s is %s', (ref, want) => {
    expect(gitSourceUrl(ref)).toBe(want);
  });

  test('a local Dockerfile: no source (never a path), no revision; version and created', () => {
    const a = publishAnnotations(image(meta({ kind: 'dockerfile', ref: './Dockerfile' })), {}, {});
    expect(a).toEqual({ 'org.opencontainers.image.version': '1.2.3', 'org.opencontainers.image.created': '2024-05-01T10:11:12.345Z' });
  });

  test('a git source: its web address and commit; flags (the runner) win, with their revision', () => {
    const img = image(meta({ kind: 'dockerfile', ref: 'git+https://github.com/acme/app.git:/Dockerfile#v1', commit: 'c'.repeat(40) }));
    expect(publishAnnotations(img, {}, {})).toMatchObject({ 'org.opencontainers.image.source': 'https://github.com/acme/app', 'org.opencontainers.image.revision': 'c'.repeat(40) });
    expect(publishAnnotations(img, { source: 'https://github.com/acme/other', revision: 'd'.repeat(40) }, {})).toMatchObject({ 'org.opencontainers.image.source': 'https://github.com/acme/other', 'org.opencontainers.image.revision': 'd'.repeat(40) });
    // A source given without a revision: the git source's commit is not claimed for it.
    expect(publishAnnotations(img, { source: 'https://github.com/acme/other' }, {})['org.opencontainers.image.revision']).toBeUndefined();
  });

  test('SOURCE_DATE_EPOCH sets created (RFC 3339); a malformed one is one line', () => {
    const img = image(meta({ kind: 'dockerfile', ref: './Dockerfile' }));
    expect(publishAnnotations(img, {}, { SOURCE_DATE_EPOCH: '1700000000' })['org.opencontainers.image.created']).toBe('2023-11-14T22:13:20Z');
    expect(() => sourceDateEpoch({ SOURCE_DATE_EPOCH: 'yesterday' })).toThrow(/^SOURCE_DATE_EPOCH 'yesterday' is not a number of seconds since 1970/);
    expect(() => sourceDateEpoch({ SOURCE_DATE_EPOCH: '999999999999' })).toThrow(/is not a number of seconds/);
    expect(sourceDateEpoch({ SOURCE_DATE_EPOCH: '' })).toBeUndefined();
  });

  test.each([
    [{ source: './Dockerfile' }, /^the source URL '\.\/Dockerfile' is not an http\(s\) URL/],
    [{ source: 'https://user:pw@github.com/acme/app' }, /^the source URL carries credentials/],
    [{ revision: 'two words' }, /^the revision 'two words' is not a revision/],
  ])('bad %j is one line', (o, want) => {
    expect(() => publishAnnotations(image(meta({ kind: 'dockerfile', ref: './Dockerfile' })), o, {})).toThrow(want);
  });
});

describe('published metadata', () => {
  test('build args, and the digests over them, are left out unless asked', () => {
    const m = meta({ kind: 'dockerfile', ref: './Dockerfile' }, { engine: 'vm', planDigest: 'p', cacheKey: 'k', buildArgs: { TOKEN: 's3cret' }, durationMs: 5 });
    expect(publishedMetadata(m, { includeBuildArgs: false }).build).toEqual({ engine: 'vm', durationMs: 5 });
    expect(JSON.stringify(publishedMetadata(m, { includeBuildArgs: false }))).not.toContain('s3cret');
    expect(publishedMetadata(m, { includeBuildArgs: true })).toEqual(m);
  });
});
