import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { identify } from '../../src/runtime/vmm-process.js';
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
});
