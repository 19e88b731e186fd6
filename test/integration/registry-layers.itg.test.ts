import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expectJsonResult, lines, runCli, tempDir } from '../helpers/cli.js';
import { pushCraftedImage } from '../helpers/oci-image.js';
import { DOCKER, dockerExportTree, ext4Tree, rawTar } from '../helpers/trees.js';

/**
 * Registry images used as FROM by the vm engine (the default): layers are applied straight into the
 * ext4 image in userspace, never extracted on the host. A hostile layer (an entry named
 * `../../../../tmp/x`, a write through a lower layer's absolute symlink) can reach nothing outside the
 * image: the first is refused naming the layer and entry, the second lands inside the image.
 */
const REGISTRY = process.env.FIREBUILD_REGISTRY_ADDR ?? '127.0.0.1:5000';
let work: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  work = await tempDir('firebuild-layers-');
  env = { FIREBUILD_HOME: path.join(work, 'home') };
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

function dockerfile(name: string, text: string): string {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'Dockerfile'), text);
  return path.join(dir, 'Dockerfile');
}

const base = rawTar([
  { path: 'etc/', type: 'Directory', mode: 0o755 },
  { path: 'etc/os-release', data: 'ID=crafted\n' },
  { path: 'tmp/', type: 'Directory', mode: 0o1777 },
]);

describe('registry layers never touch the host', () => {
  test('a layer whose symlink is named ../../../../tmp/<victim>: refused in one line naming the layer and entry; the host link is unchanged; nothing stored', async () => {
    const victim = `/tmp/fb-victim-link-${process.pid}`;
    const elsewhere = path.join(work, 'elsewhere');
    fs.symlinkSync(elsewhere, victim);
    try {
      const ref = `${REGISTRY}/fbtest/evil-link-${process.pid}:1`;
      const evil = rawTar([{ path: `../../../..${victim}`, type: 'SymbolicLink', linkpath: '/tmp/target' }]);
      await pushCraftedImage(ref, [base, evil]);
      const r = await runCli(['rootfs', '--dockerfile', dockerfile('evil', `FROM ${ref}\n`), '--tag', 'fbtest/evil-from:1'], { env });
      expect(r.code).toBe(2);
      expect(lines(r.stderr).filter((l) => /^error/.test(l))).toEqual([
        expect.stringMatching(new RegExp(`^error: .*unsafe entry in layer 1 \\(sha256:[0-9a-f]{64}\\) of ${ref.replace(/[.:/]/g, '\\$&')}: entry "\\.\\./\\.\\./\\.\\./\\.\\.${victim}" climbs out of the root with \\.\\.; refusing to convert it$`)),
      ]);
      expect(fs.readlinkSync(victim)).toBe(elsewhere);
      const ls = await runCli(['image', 'ls', '--json'], { env });
      expect(ls.stdout).not.toContain('fbtest/evil-from');
    } finally {
      fs.rmSync(victim, { force: true });
    }
  }, 5 * 60_000);

  test('a layer\'s write under a lower layer\'s symlink makes a directory there, as Docker\'s overlay2 does (never the host); whiteouts and opaque directories as Docker applies them; owners, setuid, devices and links kept', async () => {
    const name = `fb-through-${process.pid}`;
    const ref = `${REGISTRY}/fbtest/layers-${process.pid}:1`;
    const lower = rawTar([
      { path: 'usr/', type: 'Directory', mode: 0o755 },
      { path: 'usr/lib/', type: 'Directory', mode: 0o755 },
      { path: 'lib', type: 'SymbolicLink', linkpath: '/usr/lib' },
      { path: 'opt/', type: 'Directory', mode: 0o755 },
      { path: 'opt/o/', type: 'Directory', mode: 0o755 },
      { path: 'opt/o/a', data: 'a' },
      { path: 'opt/keep', data: 'keep' },
      { path: 'etc/gone', data: 'gone' },
      { path: 'usr/bin/', type: 'Directory', mode: 0o755 },
      { path: 'usr/bin/suid', data: 'suid', mode: 0o4755 },
      { path: 'usr/bin/owned', data: 'owned', mode: 0o640, uid: 1234, gid: 5678 },
      { path: 'usr/bin/hard', type: 'Link', linkpath: 'usr/bin/suid', mode: 0o4755 }, // as real archives write it: Docker applies a link's mode to the inode
      { path: 'dev/', type: 'Directory', mode: 0o755 },
      { path: 'dev/null', type: 'CharacterDevice', mode: 0o666, devmaj: 1, devmin: 3 },
    ]);
    const upper = rawTar([
      { path: `lib/${name}`, data: 'through the link' },
      { path: 'opt/o/.wh..wh..opq', data: '' },
      { path: 'opt/o/b', data: 'b' },
      { path: 'etc/.wh.gone', data: '' },
    ]);
    await pushCraftedImage(ref, [base, lower, upper]);
    const r = await runCli(['rootfs', '--dockerfile', dockerfile('through', `FROM ${ref}\n`), '--tag', 'fbtest/through:1'], { env });
    expectJsonResult(r);
    const t = await ext4Tree((JSON.parse(r.stdout) as { rootfs: string }).rootfs);
    expect(fs.existsSync(`/usr/lib/${name}`)).toBe(false);
    expect(t[`/lib/${name}`]).toMatchObject({ type: 'file', size: 16 });
    expect(t['/lib']).toMatchObject({ type: 'dir' });
    expect(t[`/usr/lib/${name}`]).toBeUndefined();
    expect(Object.keys(t).filter((p) => p.startsWith('/opt/')).sort()).toEqual(['/opt/keep', '/opt/o', '/opt/o/b']);
    expect(t['/etc/gone']).toBeUndefined();
    expect(t['/usr/bin/suid']).toMatchObject({ mode: '4755', links: ['/usr/bin/hard', '/usr/bin/suid'] });
    expect(t['/usr/bin/owned']).toMatchObject({ mode: '640', uid: 1234, gid: 5678 });
    expect(t['/dev/null']).toMatchObject({ type: 'char', rdev: '1:3' });
    // Docker's own reading of the same image: the same tree for every path the layers wrote.
    execFileSync(DOCKER, ['pull', '-q', ref], { stdio: 'pipe' });
    try {
      const d = await dockerExportTree(ref);
      const wrote = Object.keys(t).filter((x) => /^\/(opt|etc|lib|usr\/bin|usr\/lib|dev\/null)(\/|$)/.test(x));
      expect(wrote.length).toBeGreaterThan(8);
      for (const p of wrote) expect({ p, n: t[p] }).toEqual({ p, n: d[p] });
      expect(Object.keys(d).filter((p) => p.startsWith('/opt/')).sort()).toEqual(Object.keys(t).filter((p) => p.startsWith('/opt/')).sort());
    } finally {
      execFileSync(DOCKER, ['rmi', ref], { stdio: 'pipe' });
    }
  }, 5 * 60_000);
});
