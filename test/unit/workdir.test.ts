import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { identify, vmmAlive } from '../../src/runtime/vmm-process.js';
import { MemoryLogger } from '../../src/util/logger.js';
import { purgeWorkDirs, WORK_PREFIX } from '../../src/engine/vm/workdir.js';

/** After a SIGKILL (no handler runs) a vm-engine build's work dir stays; purge removes it, and only it. */
describe('purgeWorkDirs', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-workdir-test-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const make = (name: string, owner?: unknown, ageMs = 0): string => {
    const d = path.join(tmp, name);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'stage-0.ext4'), 'x');
    if (owner !== undefined) fs.writeFileSync(path.join(d, 'owner.json'), JSON.stringify(owner));
    if (ageMs) fs.utimesSync(d, new Date(Date.now() - ageMs), new Date(Date.now() - ageMs));
    return d;
  };

  it('removes the dirs of dead builds and old ownerless ones; keeps live builds, young ownerless dirs and other names', async () => {
    const me = identify(process.pid);
    const dead = make(`${WORK_PREFIX}dead`, { ...me, startTime: '1' });
    const live = make(`${WORK_PREFIX}live`, me);
    const oldBare = make(`${WORK_PREFIX}oldbare`, undefined, 5 * 60_000);
    const youngBare = make(`${WORK_PREFIX}youngbare`);
    const other = make('firebuild-download-x', { ...me, startTime: '1' });
    fs.symlinkSync(dead, path.join(tmp, `${WORK_PREFIX}link`));
    expect((await purgeWorkDirs(tmp)).sort()).toEqual([dead, oldBare].sort());
    expect([live, youngBare, other, path.join(tmp, `${WORK_PREFIX}link`)].map((p) => fs.existsSync(p) || fs.lstatSync(p).isSymbolicLink())).toEqual([true, true, true, true]);
    expect(fs.existsSync(dead)).toBe(false);
  });

  it('all: stops the live builds (SIGTERM) and removes every work dir of this user, however young; never other names or symlinks', async () => {
    // A "build" that is alive: a process the test owns, named in owner.json by its identity.
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    await new Promise((r) => child.once('spawn', r));
    const exited = new Promise((r) => child.once('exit', (_c, signal) => r(signal)));
    const owner = identify(child.pid!);
    const live = make(`${WORK_PREFIX}live`, owner);
    const youngBare = make(`${WORK_PREFIX}youngbare`);
    const other = make('firebuild-download-x');
    fs.symlinkSync(other, path.join(tmp, `${WORK_PREFIX}link`));
    const log = new MemoryLogger();
    expect((await purgeWorkDirs(tmp, { all: true, log, graceMs: 5000 })).sort()).toEqual([live, youngBare].sort());
    expect(await exited).toBe('SIGTERM');
    expect(vmmAlive(owner)).toBe(false);
    expect([fs.existsSync(other), fs.lstatSync(path.join(tmp, `${WORK_PREFIX}link`)).isSymbolicLink()]).toEqual([true, true]);
  });
});
