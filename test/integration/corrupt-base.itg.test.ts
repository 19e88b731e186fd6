import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DirectoryStorage } from '../../src/store/directory.js';
import { lines, runCli, tempDir } from '../helpers/cli.js';

/**
 * A stored base whose metadata is unreadable or fails its schema: a build FROM it (either engine's
 * resolution of a stored tag) says the stored image is corrupt and how to remove it, never that the
 * image was not found; after `firebuild image rm` the tag is free again.
 */
let work: string;
let env: NodeJS.ProcessEnv;
let store: DirectoryStorage;

beforeAll(async () => {
  work = await tempDir();
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  store = new DirectoryStorage({ rootfsRoot: path.join(work, 'home', 'rootfs'), kernelRoot: path.join(work, 'home', 'kernels'), createRoots: true });
  fs.writeFileSync(path.join(work, 'file.txt'), 'x\n');
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** A stored image `tag` whose metadata.json then gets `metadata` written over it. */
async function storedWith(tag: string, metadata: string): Promise<void> {
  const img = await store.writeImage(tag, async (s) => {
    fs.writeFileSync(s.rootfsPath, Buffer.alloc(1 << 20));
    return { type: 'rootfs', source: { kind: 'test', ref: 'corrupt-base' }, parents: [], config: {} };
  });
  fs.writeFileSync(img.metadataPath, metadata);
}

describe('a corrupt stored base', () => {
  test.each([
    ['not JSON', 'acme/notjson:1', 'not json', /not valid JSON/],
    ['failing the schema', 'acme/schema:1', JSON.stringify({ schemaVersion: 1, tag: 'acme/schema:1' }), /image metadata .*metadata\.json: /],
  ])('metadata %s: the vm engine build FROM it says it is corrupt and names `image rm`', async (_what, tag, metadata, reason) => {
    await storedWith(tag, metadata);
    const dockerfile = path.join(work, `Dockerfile-${tag.replace(/\W/g, '-')}`);
    fs.writeFileSync(dockerfile, `FROM ${tag}\nCOPY file.txt /file.txt\n`);
    const r = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', dockerfile, '--context', work, '--tag', 'acme/child:1'], { env });
    expect(r.code).toBe(2);
    const errors = lines(r.stderr).filter((l) => l.startsWith('error:'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(new RegExp(`^error: stored image ${tag} is corrupt: `));
    expect(errors[0]).toMatch(reason);
    expect(errors[0]).toContain(`remove it with 'firebuild image rm ${tag}'`);
    expect(errors[0]).not.toMatch(/not found/);
    // The fix it names works.
    expect((await runCli(['image', 'rm', tag], { env })).code).toBe(0);
    expect(await store.hasImage(tag)).toBe(false);
  });
});
