import { expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pickKernel } from '../../src/runtime/kernel.js';
import { DirectoryStorage } from '../../src/store/directory.js';
import { lines, runCli, useTempHome } from '../helpers/cli.js';

/** Debian's cloud kernel, installed by scripts/install-deps.sh (linux-image-cloud-amd64). */
function debianCloudKernel(): { vmlinuz: string; initrd: string } {
  const v = fs.readdirSync('/boot').filter((f) => /^vmlinuz-.*cloud/.test(f)).sort().pop();
  if (!v) throw new Error('no Debian cloud kernel in /boot: run scripts/install-deps.sh');
  return { vmlinuz: path.join('/boot', v), initrd: path.join('/boot', v.replace('vmlinuz', 'initrd.img')) };
}

const home = useTempHome();

test('kernel import / ls / rm with Debian\'s cloud kernel and initrd', async () => {
  const k = debianCloudKernel();
  const imp = await runCli(['kernel', 'import', '--id', 'debian-cloud', k.vmlinuz, '--initrd', k.initrd], { env: home.env });
  expect(imp.stderr).toMatch(/kernel imported id=debian-cloud format=bzimage initrd=true/);
  expect(imp.code).toBe(0);
  const stored = path.join(home.dir, 'kernels', 'debian-cloud');
  const sha = (f: string): string => createHash('sha256').update(fs.readFileSync(f)).digest('hex');
  expect(sha(path.join(stored, 'vmlinux'))).toBe(sha(k.vmlinuz));
  expect(sha(path.join(stored, 'initrd'))).toBe(sha(k.initrd));

  const ls = await runCli(['kernel', 'ls', '--json'], { env: home.env });
  const list = JSON.parse(ls.stdout);
  expect(list).toHaveLength(1);
  expect(list[0].metadata).toMatchObject({ id: 'debian-cloud', format: 'bzimage', vmlinux: { sha256: sha(k.vmlinuz) }, initrd: { sha256: sha(k.initrd) } });

  const dup = await runCli(['kernel', 'import', '--id', 'debian-cloud', k.vmlinuz], { env: home.env });
  expect(dup.code).toBe(2);
  expect(lines(dup.stderr)).toEqual(['error: kernel debian-cloud already exists: choose another --id or pass --overwrite']);

  expect((await runCli(['kernel', 'rm', 'debian-cloud'], { env: home.env })).code).toBe(0);
  expect(fs.existsSync(stored)).toBe(false);
  const gone = await runCli(['kernel', 'rm', 'debian-cloud'], { env: home.env });
  expect(gone.code).toBe(2);
  expect(gone.stderr).toMatch(/kernel debian-cloud not found/);
});

test('an ELF vmlinux is recognised as such', async () => {
  // Any ELF file shows the detection; a real vmlinux comes from `firebuild kernel build` (runtime issue).
  const r = await runCli(['kernel', 'import', '--id', 'elf', process.execPath], { env: home.env });
  expect(r.code).toBe(0);
  const list = JSON.parse((await runCli(['kernel', 'ls', '--json'], { env: home.env })).stdout) as { id: string; metadata: { format: string } }[];
  expect(list.find((k) => k.id === 'elf')?.metadata.format).toBe('elf');
});

test('without --vmlinux-id the kernel named `default` boots (the fast kernel), else the only one; several without a default is one error naming them', async () => {
  const root = fs.mkdtempSync(path.join(home.dir, 'pick-'));
  const store = new DirectoryStorage({ rootfsRoot: path.join(root, 'rootfs'), kernelRoot: path.join(root, 'kernels'), createRoots: true });
  await expect(pickKernel(store, undefined)).rejects.toThrow(/^no kernel stored: build the fast guest kernel with firebuild kernel build, or import one/);
  await store.importKernel('debian-cloud', process.execPath);
  expect((await pickKernel(store, undefined)).id).toBe('debian-cloud');
  await store.importKernel('other', process.execPath);
  await expect(pickKernel(store, undefined)).rejects.toThrow('several kernels stored (debian-cloud, other) and none named default: choose one with --vmlinux-id');
  await store.importKernel('default', process.execPath);
  expect((await pickKernel(store, undefined)).id).toBe('default');
  expect((await pickKernel(store, 'other')).id).toBe('other');
});
