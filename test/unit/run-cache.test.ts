import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RunCache, newVmmId, type VmState } from '../../src/runtime/state.js';
import { purgeVms } from '../../src/runtime/stop.js';
import { identify } from '../../src/runtime/vmm-process.js';
import { MemoryLogger } from '../../src/util/logger.js';

/** The run cache on a real directory: atomic creation, and purge of what holds no readable state. */
let root: string;
let cache: RunCache;
beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'run-cache-'));
  cache = new RunCache(root);
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

function state(id: string, over: Partial<VmState> = {}): VmState {
  const dir = path.join(root, id);
  return {
    schemaVersion: 1, id, name: id.slice(0, 12), image: 'a/b:1', kernel: 'default', backend: 'qemu', accel: 'tcg', pid: 0,
    started: new Date().toISOString(), hostname: 'h', network: { mode: 'none', ports: [] }, serialLog: path.join(dir, 'serial.log'), cacheDir: dir, ...over,
  };
}
const aged = (p: string): void => {
  const t = new Date(Date.now() - 5 * 60_000);
  fs.utimesSync(p, t, t);
};

describe('run cache', () => {
  test('create makes the directory with its state in one step (no temporary directory left)', async () => {
    const s = state(newVmmId());
    expect(await cache.create(s)).toBe(path.join(root, s.id));
    expect(fs.readdirSync(root)).toEqual([s.id]);
    expect(await cache.read(s.id)).toEqual(s);
    expect(fs.statSync(path.join(root, s.id, 'state.json')).mode & 0o777).toBe(0o600);
  });

  test('an unparsable or invalid state.json reads as corrupt, with the purge hint', async () => {
    const a = newVmmId();
    fs.mkdirSync(path.join(root, a));
    fs.writeFileSync(path.join(root, a, 'state.json'), '{"schemaVersion": 1, "id": ');
    await expect(cache.read(a)).rejects.toThrow(`corrupt VM state ${path.join(root, a, 'state.json')}: remove it with 'firebuild purge'`);
  });

  test('purge removes corrupt states, old directories without a state and left temporary directories; a young one and a live VM stay', async () => {
    const log = new MemoryLogger();
    const unparsable = newVmmId();
    fs.mkdirSync(path.join(root, unparsable));
    fs.writeFileSync(path.join(root, unparsable, 'state.json'), 'not json');
    fs.writeFileSync(path.join(root, unparsable, 'rootfs.ext4'), 'x');
    const invalid = newVmmId();
    fs.mkdirSync(path.join(root, invalid));
    fs.writeFileSync(path.join(root, invalid, 'state.json'), JSON.stringify({ schemaVersion: 2 }));
    const stateless = newVmmId();
    fs.mkdirSync(path.join(root, stateless));
    aged(path.join(root, stateless));
    const young = newVmmId();
    fs.mkdirSync(path.join(root, young));
    const leftNew = `.new-${newVmmId()}`;
    fs.mkdirSync(path.join(root, leftNew));
    aged(path.join(root, leftNew));
    // A creation interrupted by a kill (its creator is gone): removed at once, however young.
    const interrupted = newVmmId();
    fs.mkdirSync(path.join(root, `.new-${interrupted}`));
    fs.writeFileSync(path.join(root, `.new-${interrupted}`, 'state.json'), JSON.stringify(state(interrupted, { creator: { pid: 999_999_999, startTime: '1', bootId: 'x' } })));
    // One being created by a live process stays.
    const creating = newVmmId();
    fs.mkdirSync(path.join(root, `.new-${creating}`));
    fs.writeFileSync(path.join(root, `.new-${creating}`, 'state.json'), JSON.stringify(state(creating, { creator: identify(process.pid) })));
    // A VM being created by this (live) process: running, never purged.
    const live = state(newVmmId(), { creator: identify(process.pid) });
    await cache.create(live);
    // A VM whose creator died before its VMM started: not running, purged.
    const orphan = state(newVmmId(), { creator: { pid: 999_999_999, startTime: '1', bootId: 'x' } });
    await cache.create(orphan);
    expect((await cache.list()).map((v) => [v.id, v.running])).toEqual(expect.arrayContaining([[live.id, true], [orphan.id, false]]));

    const purged = await purgeVms(cache, log, path.join(root, 'locks'));
    expect(purged.sort()).toEqual([unparsable, invalid, stateless, leftNew.slice('.new-'.length), interrupted, orphan.id].sort());
    expect(fs.readdirSync(root).sort()).toEqual([live.id, young, `.new-${creating}`].sort());
    expect(log.entries.filter((e) => e.message === 'purged unreadable VM state')).toHaveLength(5);
  });
});
