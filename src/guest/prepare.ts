import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Debugfs, DebugfsError, mayBeMissing, quote } from '../rootfs/debugfs.js';
import { Ext4Tools } from '../rootfs/ext4.js';
import { UserError } from '../util/errors.js';
import { copySparse } from '../util/fs.js';
import type { Logger } from '../util/logger.js';
import { ownedTempDir } from '../util/private-dir.js';
import { copyChecked, type CheckedFile } from '../util/safe-open.js';
import { renderEnvSh, renderMounts, renderRunNul, renderRunSh, renderSecrets, renderSshAgents, type RunConfig } from './run-config.js';

/** The guest side's files, shipped in the package's guest/ folder. */
const GUEST_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'guest');
export const INIT_PATH = '/.firebuild/init';
const BUSYBOX_CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];

/**
 * A per-VM copy of a stored image (sparse, reflinked where the file system can), with the firebuild init
 * and its static busybox placed in it through debugfs (no mount). The stored image is never written.
 * A CheckedFile (root reading another user's store) is copied through its descriptor only.
 */
export async function prepareRootfs(stored: string | CheckedFile, copy: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  if (typeof stored === 'string') await copySparse(stored, copy);
  else await copyChecked(stored, copy);
  await injectGuest(copy, env);
}

/** The guest side's files, as injectGuest places them: removed again after a build step. */
const GUEST_FILES = ['/.firebuild/bin/sh', '/.firebuild/bin/busybox', '/.firebuild/init', '/.firebuild/udhcpc.sh'];
const GUEST_DIRS = ['/.firebuild/bin', '/.firebuild/config', '/.firebuild'];

/** Place the firebuild init and its static busybox in an image through debugfs (no mount). */
export async function injectGuest(copy: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const busybox = await staticBusybox();
  const init = await guestInit(env);
  const script = [
    'mkdir /.firebuild',
    'mkdir /.firebuild/bin',
    'mkdir /.firebuild/config',
    `write ${quote(busybox)} /.firebuild/bin/busybox`,
    'symlink /.firebuild/bin/sh busybox',
    `write ${quote(init)} /.firebuild/init`,
    `write ${quote(path.join(GUEST_DIR, 'udhcpc.sh'))} /.firebuild/udhcpc.sh`,
    'sif /.firebuild/bin/busybox mode 0100755',
    'sif /.firebuild/init mode 0100755',
    'sif /.firebuild/udhcpc.sh mode 0100755',
    'sif /.firebuild mode 040755',
  ];
  try {
    await new Debugfs(copy).write(script);
  } catch (err) {
    if (err instanceof DebugfsError && err.kind === 'full') throw new UserError('the image has no room for the firebuild init: rebuild it with more --free-space', { cause: err });
    throw err;
  }
}

/** Take injectGuest's files out again (a built image carries nothing of firebuild's). */
export async function removeGuest(image: string): Promise<void> {
  // A RUN may have removed them itself: only their absence is expected (a /.firebuild the RUN filled is an error).
  await new Debugfs(image).write([...GUEST_FILES.map((f) => mayBeMissing(`rm ${f}`)), ...GUEST_DIRS.map((d) => mayBeMissing(`rmdir ${d}`))]);
}

/** A build step's ssh agents (RUN --mount=type=ssh): where the guest init makes their sockets; no path of the host's. */
async function writeSshAgents(c: RunConfig, dir: string): Promise<void> {
  if (!c.sshAgents?.length) return;
  const r = renderSshAgents(c.sshAgents);
  await fsp.writeFile(path.join(dir, 'ssh.nul'), r.nul, { mode: 0o600 });
  await fsp.writeFile(path.join(dir, 'ssh.sh'), r.sh, { mode: 0o600 });
}

/**
 * The read-only config disk: an ext4 file (mode 0600 from its creation) holding run.sh, env.sh,
 * authorized_keys and a build step's secrets. Its files are staged (0600) in a private temp dir that this
 * process owns (removed on cancel too) and removed as soon as the disk is made.
 */
export async function makeConfigDisk(c: RunConfig, image: string, log: Logger, authorizedKeys?: string): Promise<void> {
  const tmp = await ownedTempDir('firebuild-config-');
  const dir = tmp.path;
  try {
    await fsp.chmod(dir, 0o700);
    // Created 0600 before mkfs writes into it: the disk is never readable by others, not even for a moment.
    await fsp.rm(image, { force: true });
    await (await fsp.open(image, 'wx', 0o600)).close();
    await fsp.writeFile(path.join(dir, 'run.sh'), renderRunSh(c), { mode: 0o600 });
    await fsp.writeFile(path.join(dir, 'env.sh'), renderEnvSh(c.env), { mode: 0o600 });
    const nul = renderRunNul(c);
    await fsp.writeFile(path.join(dir, 'run.nul'), nul.run, { mode: 0o600 });
    await fsp.writeFile(path.join(dir, 'argv.nul'), nul.argv, { mode: 0o600 });
    await fsp.writeFile(path.join(dir, 'env.nul'), nul.env, { mode: 0o600 });
    if (authorizedKeys) await fsp.writeFile(path.join(dir, 'authorized_keys'), authorizedKeys, { mode: 0o600 });
    if (c.secrets?.length) {
      const r = renderSecrets(c.secrets);
      await fsp.mkdir(path.join(dir, 'secrets'), { mode: 0o700 });
      for (const [i, s] of c.secrets.entries()) await fsp.writeFile(path.join(dir, 'secrets', String(i)), s.value.bytes(), { mode: 0o600, flag: 'wx' });
      await fsp.writeFile(path.join(dir, 'secrets.nul'), r.nul, { mode: 0o600 });
      await fsp.writeFile(path.join(dir, 'secrets.sh'), r.sh, { mode: 0o600 });
    }
    await writeSshAgents(c, dir);
    if (c.mounts?.length) {
      const r = renderMounts(c.mounts);
      await fsp.writeFile(path.join(dir, 'mounts.nul'), r.nul, { mode: 0o600 });
      await fsp.writeFile(path.join(dir, 'mounts.sh'), r.sh, { mode: 0o600 });
    }
    // Room for the secrets (up to 500 KiB each) besides the few small files.
    const secretBytes = (c.secrets ?? []).reduce((a, s) => a + Math.ceil(s.value.bytes().length / 4096) * 4096 + 4096, 0);
    await new Ext4Tools(log).mkfs({ root: dir, image, sizeBytes: (4 << 20) + secretBytes, label: 'fbconfig' });
    await fsp.chmod(image, 0o600);
  } finally {
    await tmp.remove();
  }
}

/** The compiled init (guest/build/firebuild-init, from guest/init.c) when built, else the shell init. FIREBUILD_GUEST_INIT=shell forces the shell one. */
export async function guestInit(env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const compiled = path.join(GUEST_DIR, 'build', 'firebuild-init');
  if (env.FIREBUILD_GUEST_INIT !== 'shell') {
    const { isStaticElf } = await import('../util/elf.js');
    if (await isStaticElf(compiled).catch(() => false)) return compiled;
  }
  return path.join(GUEST_DIR, 'firebuild-init.sh');
}

async function staticBusybox(): Promise<string> {
  const { isStaticElf } = await import('../util/elf.js');
  for (const p of BUSYBOX_CANDIDATES) {
    if (await isStaticElf(p).catch(() => false)) return p;
  }
  throw new UserError('no statically linked busybox on this host: install busybox-static (scripts/install-deps.sh)');
}
