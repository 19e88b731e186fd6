import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StepCache } from '../../src/engine/step-cache.js';
import { MemoryLogger } from '../../src/util/logger.js';
import { duplicateNameImage, hostileNameImage, mkfsFromDir } from '../helpers/ext4-craft.js';

/** A step cache archive from the Actions cache is outside input: its ext4 entries are checked before they are kept. */
let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'step-cache-check-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('StepCache.unpack', () => {
  test('a restored entry with a hostile ext4 (a ../ name, two entries of one name) is dropped, a clean one kept', async () => {
    const log = new MemoryLogger();
    const source = new StepCache(path.join(dir, 'job1'), 1 << 30, log);
    const keys = { clean: 'a'.repeat(64), name: 'b'.repeat(64), dup: 'c'.repeat(64) };
    const tree = path.join(dir, 'tree');
    fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'etc/hostname'), 'clean\n');
    mkfsFromDir(tree, path.join(dir, 'clean.ext4'), { sizeMiB: 8 });
    hostileNameImage(path.join(dir, 'name.ext4'), dir, `fb-stepcache-${process.pid}`);
    duplicateNameImage(path.join(dir, 'dup.ext4'), dir, `/tmp/fb-stepcache-target-${process.pid}`);
    for (const [k, v] of Object.entries(keys)) await source.save(v, path.join(dir, `${k}.ext4`));
    const archive = path.join(dir, 'steps.tar.zst');
    expect(await source.pack(Object.values(keys), archive)).toBe(3);

    const restored = new StepCache(path.join(dir, 'job2'), 1 << 30, log);
    expect(await restored.unpack(archive)).toBe(1);
    expect(await restored.present(Object.values(keys))).toEqual([keys.clean]);
    expect(fs.readdirSync(restored.dir).sort()).toEqual([`${keys.clean}.ext4`, `${keys.clean}.json`]);
    const warnings = log.entries.filter((e) => e.level === 'warn').map((e) => String(e.fields?.reason));
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/^the ext4 image step cache entry bbbbbbbbbbbbbbbb.*refusing it/);
    expect(warnings[1]).toMatch(/^the ext4 image step cache entry cccccccccccccccc.*refusing/);
    expect(fs.existsSync(`/tmp/fb-stepcache-${process.pid}`)).toBe(false);
  });
});
