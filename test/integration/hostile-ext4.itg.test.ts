import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lines, runCli, tempDir } from '../helpers/cli.js';
import { readerTree } from '../helpers/debugfs-tree.js';
import { duplicateNameImage, hostileNameImage, mkfsFromDir, storeRawImage } from '../helpers/ext4-craft.js';
import { DOCKER } from '../helpers/trees.js';

/**
 * Hostile ext4 images from outside (issue 12, item 2): a root entry named `../…/tmp/<leaf>` and a
 * directory with two entries `x` (a symlink to a host path, then a setuid file). Pulled, they are refused
 * and nothing is stored; used by COPY --from or as a Docker-engine FROM, nothing lands on the host.
 */
const REGISTRY = '127.0.0.1:5000';
let work: string;
const leaf = `fb-hostile-${process.pid}`;
const target = `/tmp/fb-hostile-target-${process.pid}`;
const errorLines = (s: string): string[] => lines(s).filter((l) => l.startsWith('error:'));
const home = (name: string): NodeJS.ProcessEnv => ({ FIREBUILD_HOME: path.join(work, name) });

beforeAll(async () => {
  work = await tempDir();
  hostileNameImage(path.join(work, 'name.ext4'), work, leaf);
  duplicateNameImage(path.join(work, 'dup.ext4'), work, target);
  // The attacker's store: both images as they would be pushed.
  await storeRawImage(path.join(work, 'attacker'), 'evil/name:1', path.join(work, 'name.ext4'));
  await storeRawImage(path.join(work, 'attacker'), 'evil/dup:1', path.join(work, 'dup.ext4'));
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
  for (const f of [`/tmp/${leaf}`, target]) fs.rmSync(f, { force: true });
});

function nothingOnTheHost(): void {
  const seen = (f: string): string | undefined => {
    const st = fs.lstatSync(f, { throwIfNoEntry: false });
    return st && `${f} ${st.isSymbolicLink() ? 'symlink' : (st.mode & 0o7777).toString(8)}`;
  };
  expect([seen(`/tmp/${leaf}`), seen(target)]).toEqual([undefined, undefined]);
}

describe('hostile ext4 images', () => {
  test('image pull of an artifact whose ext4 has a ../ name or two entries of one name: exit 2, one line, no tag stored', async () => {
    for (const name of ['name', 'dup']) {
      const ref = `${REGISTRY}/fbtest/evil-${name}-${process.pid}:1`;
      // The attacker's push: without an SBOM (reading the hostile tree for one is refused like any read of it).
      const p = await runCli(['image', 'push', `evil/${name}:1`, ref, '--no-sbom'], { env: home('attacker') });
      expect({ code: p.code, errors: errorLines(p.stderr) }).toEqual({ code: 0, errors: [] });
      const q = await runCli(['image', 'pull', ref], { env: home('victim') });
      expect(q.code).toBe(2);
      expect(errorLines(q.stderr)).toHaveLength(1);
      expect(errorLines(q.stderr)[0]).toMatch(new RegExp(`^error: the ext4 image ${ref.replace(/[.:/]/g, '\\$&')}@sha256:[0-9a-f]{64}.*(e2fsck|refusing)`));
      const ls = await runCli(['image', 'ls'], { env: home('victim') });
      expect(ls.stdout).not.toContain(`evil/${name}`);
      expect(fs.readdirSync(path.join(work, 'victim', 'rootfs')).filter((f) => !f.startsWith('.'))).toEqual([]);
    }
    nothingOnTheHost();
  });

  test('COPY --from a stored hostile image (vm engine): the build fails with one line and writes nothing on the host', async () => {
    const ctx = path.join(work, 'copyfrom');
    fs.mkdirSync(ctx);
    for (const [name, copy] of [['name', '/ /out/'], ['dup', '/d/ /out/']]) {
      fs.writeFileSync(path.join(ctx, 'Dockerfile'), `FROM scratch\nCOPY --from=evil/${name}:1 ${copy}\n`);
      const r = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(ctx, 'Dockerfile'), '--tag', `fbtest/copy-evil-${name}:1`], { env: home('attacker') });
      nothingOnTheHost();
      expect(r.code).toBe(2);
      expect(errorLines(r.stderr)).toHaveLength(1);
      expect(errorLines(r.stderr)[0]).toMatch(name === 'name' ? /tmp\/fb-hostile-\d+".*name with '\/'.*refusing/ : /"\/d\/x": two entries of this name in one directory/);
      nothingOnTheHost();
    }
  });

  test('--engine docker FROM a stored hostile image: refused, no host file, nothing setuid on the host; a clean stored image still imports', async () => {
    const ctx = path.join(work, 'dockerfrom');
    fs.mkdirSync(ctx);
    for (const name of ['name', 'dup']) {
      execFileSync(DOCKER, ['rmi', '-f', `evil/${name}:1`], { stdio: 'ignore' });
      fs.writeFileSync(path.join(ctx, 'Dockerfile'), `FROM evil/${name}:1\nLABEL x=y\n`);
      const r = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.join(ctx, 'Dockerfile'), '--tag', `fbtest/docker-evil-${name}:1`], { env: home('attacker') });
      nothingOnTheHost();
      expect(r.code).toBe(2);
      expect(errorLines(r.stderr)).toHaveLength(1);
      expect(errorLines(r.stderr)[0]).toMatch(/^error: the ext4 image evil\/(name|dup):1, at ".*refusing the image$/);
      nothingOnTheHost();
    }
    // The setuid file of a clean image keeps its bit inside the imported image, and no copy of it is on the host.
    const tree = path.join(work, 'suid-tree');
    fs.mkdirSync(path.join(tree, 'bin'), { recursive: true });
    fs.copyFileSync('/bin/busybox', path.join(tree, 'bin/busybox'));
    fs.chmodSync(path.join(tree, 'bin/busybox'), 0o4755);
    fs.symlinkSync('busybox', path.join(tree, 'bin/sh'));
    mkfsFromDir(tree, path.join(work, 'suid.ext4'), { sizeMiB: 16 });
    fs.rmSync(tree, { recursive: true, force: true });
    await storeRawImage(path.join(work, 'attacker'), 'fbtest/suid:1', path.join(work, 'suid.ext4'));
    execFileSync(DOCKER, ['rmi', '-f', 'fbtest/suid:1'], { stdio: 'ignore' });
    const tmp = path.join(work, 'tmpdir');
    fs.mkdirSync(tmp);
    fs.writeFileSync(path.join(ctx, 'Dockerfile'), 'FROM fbtest/suid:1\nRUN ["/bin/busybox", "sh", "-c", "test -u /bin/busybox && echo suid-kept > /proof"]\n');
    const r = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.join(ctx, 'Dockerfile'), '--tag', 'fbtest/suid-child:1'], { env: { ...home('attacker'), TMPDIR: tmp } });
    expect({ code: r.code, errors: errorLines(r.stderr) }).toEqual({ code: 0, errors: [] });
    const suidOnHost = execFileSync('find', [tmp, '-perm', '-4000'], { encoding: 'utf8' }).trim();
    expect(suidOnHost).toBe('');
    const img = JSON.parse(r.stdout) as { rootfs: string };
    const got = await readerTree(img.rootfs);
    expect(got.find((e) => e.path === '/proof')?.size).toBe('suid-kept\n'.length);
    expect(got.find((e) => e.path === '/bin/busybox')?.mode).toBe(0o4755);
  });
});
