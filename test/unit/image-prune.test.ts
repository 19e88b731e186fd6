import { imagePrune, tagGlob } from '../../src/commands/image.js';
import type { ImageListEntry, StorageProvider } from '../../src/store/provider.js';
import { MemoryLogger } from '../../src/util/logger.js';

/** `image prune --match GLOB --keep N`: the newest N of each matching repository stay, by creation time. */
describe('tagGlob', () => {
  it.each([
    ['pr/*', 'pr/app:12-1', true],
    ['pr/*', 'pr/api:7-2', true],
    ['pr/*', 'prx/app:1', false],
    ['pr/*', 'acme/pr:1', false],
    ['pr/app', 'pr/app:3-1', true],
    ['pr/app', 'pr/apps:3-1', false],
    ['pr/app:12-*', 'pr/app:12-3', true],
    ['pr/app:12-*', 'pr/app:123-1', false],
    ['pr/app:1?-1', 'pr/app:13-1', true],
    ['*', 'acme/web:1', true],
  ])('%s matches %s: %s', (glob, tag, want) => {
    expect(tagGlob(glob).test(tag)).toBe(want);
  });
  it('refuses a glob with other characters in one line', () => {
    expect(() => tagGlob('pr/[ab]*')).toThrow(/^malformed --match 'pr\/\[ab\]\*': use tag characters and \* or \?, e.g. 'pr\/\*'$/);
  });
});

describe('imagePrune', () => {
  const entry = (tag: string, created: string, error?: string): ImageListEntry =>
    ({ tag, allocatedSize: 0, apparentSize: 0, ...(error ? { error } : { metadata: { created, type: 'rootfs', parents: [] } }) }) as unknown as ImageListEntry;
  const store = (entries: ImageListEntry[]): { s: StorageProvider; removed: string[] } => {
    const removed: string[] = [];
    const s = { listImages: async () => entries, removeImage: async (t: string) => void removed.push(t) } as unknown as StorageProvider;
    return { s, removed };
  };
  const images = [
    entry('pr/app:11-1', '2026-01-01T10:00:00.000Z'),
    entry('pr/app:12-1', '2026-01-02T10:00:00.000Z'),
    entry('pr/app:12-2', '2026-01-03T10:00:00.000Z'),
    entry('pr/app:9-1', '2026-01-04T10:00:00.000Z'),
    entry('pr/api:1-1', '2025-01-01T10:00:00.000Z'),
    entry('pr/app:broken', '', 'unreadable metadata'),
    entry('acme/web:1', '2020-01-01T00:00:00.000Z'),
  ];

  it('keeps the newest N per repository (not the highest version), leaves unreadable and unmatched images', async () => {
    const { s, removed } = store(images);
    expect(await imagePrune(s, { match: tagGlob('pr/*'), keep: 2 }, new MemoryLogger())).toEqual(['pr/app:11-1', 'pr/app:12-1']);
    expect(removed.sort()).toEqual(['pr/app:11-1', 'pr/app:12-1']);
  });
  it('keep 0 removes every match; --dry-run removes nothing', async () => {
    const a = store(images);
    expect(await imagePrune(a.s, { match: tagGlob('pr/app'), keep: 0 }, new MemoryLogger())).toEqual(['pr/app:11-1', 'pr/app:12-1', 'pr/app:12-2', 'pr/app:9-1']);
    const b = store(images);
    expect(await imagePrune(b.s, { match: tagGlob('pr/*'), keep: 1, dryRun: true }, new MemoryLogger())).toEqual(['pr/app:11-1', 'pr/app:12-1', 'pr/app:12-2']);
    expect(b.removed).toEqual([]);
  });
});
