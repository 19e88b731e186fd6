import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { removeLeftovers } from '../../src/commands/vm.js';
import type { Settings } from '../../src/profile/settings.js';
import { endVm, ownVm, ownsVm } from '../../src/runtime/owner.js';
import { cleanupAll, own, ownedNow, ownedResources, resetCleanupsForTests, watchOwned, type Resource } from '../../src/util/cleanup.js';
import { MemoryLogger } from '../../src/util/logger.js';
import { ownedTempDir, removeOwnedTempDir } from '../../src/util/private-dir.js';

/**
 * The owner registry's descriptors (util/cleanup.ts): what a watcher (the actions' main step, saving them to
 * the step's state) is told, and when; and the post step's removal of a recorded temp dir, which touches
 * only firebuild's own temp dirs under the temp dir.
 */
let tmp: string;
beforeEach(() => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'cleanup-test-')));
});
afterEach(() => {
  resetCleanupsForTests();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('owned resources and their watcher', () => {
  test('the watcher hears of each resource as it is registered and released, never of one without a descriptor', () => {
    const seen: Resource[][] = [];
    watchOwned((live) => seen.push(live));
    const a = own('VM a', () => undefined, { kind: 'vm', id: 'a' });
    const p = own('process sleep', () => undefined);
    const b = own('dir b', () => undefined, { kind: 'dir', path: '/tmp/b' });
    p();
    a();
    b();
    expect(seen).toEqual([[], [{ kind: 'vm', id: 'a' }], [{ kind: 'vm', id: 'a' }, { kind: 'dir', path: '/tmp/b' }], [{ kind: 'dir', path: '/tmp/b' }], []]);
  });

  test('a cancel drops what it removed and keeps what it could not (for the post step)', async () => {
    const seen: Resource[][] = [];
    own('VM ok', () => undefined, { kind: 'vm', id: 'ok' });
    own('VM stuck', () => {
      throw new Error('no');
    }, { kind: 'vm', id: 'stuck' });
    watchOwned((live) => seen.push(live));
    const failures = await cleanupAll();
    expect(failures.map((f) => f.what)).toEqual(['VM stuck']);
    expect(ownedResources()).toEqual([{ kind: 'vm', id: 'stuck' }]);
    expect(seen.at(-1)).toEqual([{ kind: 'vm', id: 'stuck' }]);
  });

  test('a VM stays listed until its teardown finished; a second teardown waits for the first', async () => {
    const seen: Resource[][] = [];
    watchOwned((live) => seen.push(live));
    let finish!: () => void;
    let runs = 0;
    const slow = (): Promise<void> => {
      runs++;
      return new Promise<void>((resolve) => (finish = resolve));
    };
    ownVm('v1', 'VM v1', () => endVm('v1', slow));
    const first = endVm('v1', slow);
    // The cancel's cleanup while the step tears the VM down: the same teardown, not a second.
    const cancel = cleanupAll();
    await new Promise((r) => setImmediate(r));
    expect({ runs, owned: ownsVm('v1'), live: ownedResources() }).toEqual({ runs: 1, owned: true, live: [{ kind: 'vm', id: 'v1' }] });
    finish();
    await first;
    expect(await cancel).toEqual([]);
    expect({ owned: ownsVm('v1'), live: ownedResources(), last: seen.at(-1) }).toEqual({ owned: false, live: [], last: [] });
  });

  test('ownedTempDir describes its directory by path from the moment it exists until it is removed', async () => {
    const seen: Resource[][] = [];
    watchOwned((live) => seen.push(live));
    const d = await ownedTempDir('firebuild-unit-');
    expect(path.dirname(d.path)).toBe(path.resolve(os.tmpdir()));
    expect(seen.at(-1)).toEqual([{ kind: 'dir', path: d.path }]);
    expect(ownedNow()).toEqual([`temp dir ${d.path}`]);
    await d.remove();
    expect({ exists: fs.existsSync(d.path), last: seen.at(-1) }).toEqual({ exists: false, last: [] });
    await expect(ownedTempDir('not-firebuild-')).rejects.toThrow(/prefix/);
  });
});

describe('removeOwnedTempDir (the post step, after a SIGKILL)', () => {
  test('removes a firebuild temp dir under the temp dir; a missing one is gone', async () => {
    const d = fs.mkdtempSync(path.join(tmp, 'firebuild-vmbuild-'));
    fs.writeFileSync(path.join(d, 'disk'), 'x');
    expect(await removeOwnedTempDir(d, tmp)).toBe('removed');
    expect(fs.existsSync(d)).toBe(false);
    expect(await removeOwnedTempDir(d, tmp)).toBe('gone');
  });

  test('refuses any other path, a symlink, and leaves it alone', async () => {
    const victim = fs.mkdtempSync(path.join(tmp, 'victim-'));
    fs.writeFileSync(path.join(victim, 'keep'), 'x');
    const nested = path.join(tmp, 'sub');
    fs.mkdirSync(nested);
    const deeper = fs.mkdtempSync(path.join(nested, 'firebuild-vmbuild-'));
    const link = path.join(tmp, 'firebuild-vmbuild-abcDE1');
    fs.symlinkSync(victim, link);
    const file = path.join(tmp, 'firebuild-push-abcDE2');
    fs.writeFileSync(file, 'x');
    for (const p of [victim, deeper, '/', tmp, `${tmp}/firebuild-vmbuild-abcDE1/..`, 'firebuild-vmbuild-abcDE3', path.join(tmp, 'firebuild-vmbuild-abc')]) {
      expect(await removeOwnedTempDir(p, tmp)).toEqual({ refused: expect.stringMatching(/not a firebuild temp directory/) });
    }
    expect(await removeOwnedTempDir(link, tmp)).toEqual({ refused: 'not a directory' });
    expect(await removeOwnedTempDir(file, tmp)).toEqual({ refused: 'not a directory' });
    expect([fs.existsSync(path.join(victim, 'keep')), fs.existsSync(deeper), fs.existsSync(file)]).toEqual([true, true, true]);
  });
});

describe('removeLeftovers (the post step reads the list from the step state, never trusts it)', () => {
  // No VM id to look up: the settings (the run cache) are never read.
  const settings = {} as Settings;

  test('a list that is not one firebuild wrote is refused as a whole', async () => {
    for (const bad of ['x', { kind: 'dir', path: '/' }, [{ kind: 'file', path: '/etc/passwd' }], [{ kind: 'dir', path: '/tmp/x', extra: 1 }]]) {
      expect(await removeLeftovers(settings, bad, new MemoryLogger())).toEqual({ vms: [], dirs: [], refused: ['the list of owned resources is not one firebuild wrote'] });
    }
  });

  test('an id that is no VM id and a path that is no firebuild temp dir are refused one by one, and left alone', async () => {
    const r = await removeLeftovers(settings, [{ kind: 'vm', id: '../../etc' }, { kind: 'dir', path: tmp }, { kind: 'dir', path: '/etc' }], new MemoryLogger());
    expect(r).toEqual({ vms: [], dirs: [], refused: ['VM id "../../etc": not a VM id', expect.stringMatching(/^\/.*: not a firebuild temp directory under /), '/etc: not a firebuild temp directory under ' + path.resolve(os.tmpdir())] });
    expect(fs.existsSync(tmp)).toBe(true);
  });

  test('a firebuild temp dir under the temp dir is removed', async () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-unit-'));
    expect(await removeLeftovers(settings, [{ kind: 'dir', path: d }], new MemoryLogger())).toEqual({ vms: [], dirs: [d], refused: [] });
    expect(fs.existsSync(d)).toBe(false);
  });
});
