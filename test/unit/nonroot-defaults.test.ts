import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PROFILE_SCHEMA_VERSION, ProfileStore, SYSTEM_PROFILE_CONF_DIR, defaultProfileConfDir, userProfileConfDir, type Profile } from '../../src/profile/profile.js';
import { profileFallbackDirs } from '../../src/profile/paths.js';
import { resolveSettings, validateForProfile } from '../../src/profile/settings.js';
import { chooseBackend } from '../../src/vmm/backend.js';
import { needsRootError, rootAccess } from '../../src/util/privilege.js';
import { UserError } from '../../src/util/errors.js';

/**
 * A runner's unprivileged user: its profiles under its own XDG config directory (root keeps
 * /etc/firebuild/profiles), a host-wide profile still found (read only), and root-only parts refused in
 * one line naming runner-setup. The uid is a parameter, so these run as any user.
 */
const home = os.homedir();

describe('the default profile directory', () => {
  test('root: /etc/firebuild/profiles; another user: $XDG_CONFIG_HOME/firebuild/profiles, else ~/.config/firebuild/profiles', () => {
    expect(defaultProfileConfDir({}, 0)).toBe('/etc/firebuild/profiles');
    expect(defaultProfileConfDir({}, 1001)).toBe(path.join(home, '.config', 'firebuild', 'profiles'));
    expect(defaultProfileConfDir({ XDG_CONFIG_HOME: '/x/conf' }, 1001)).toBe('/x/conf/firebuild/profiles');
    // A relative XDG_CONFIG_HOME is ignored, as the XDG spec says.
    expect(defaultProfileConfDir({ XDG_CONFIG_HOME: 'rel/conf' }, 1001)).toBe(path.join(home, '.config', 'firebuild', 'profiles'));
  });

  test('FIREBUILD_PROFILE_CONF_DIR overrides it for everyone', () => {
    expect(defaultProfileConfDir({ FIREBUILD_PROFILE_CONF_DIR: '/o/p' }, 0)).toBe('/o/p');
    expect(defaultProfileConfDir({ FIREBUILD_PROFILE_CONF_DIR: '/o/p', XDG_CONFIG_HOME: '/x' }, 1001)).toBe('/o/p');
  });

  test('only a non-root reader of its own directory falls back to the host-wide one', () => {
    expect(profileFallbackDirs(userProfileConfDir({}), {}, 1001)).toEqual([SYSTEM_PROFILE_CONF_DIR]);
    expect(profileFallbackDirs('/x/conf/firebuild/profiles', { XDG_CONFIG_HOME: '/x/conf' }, 1001)).toEqual([SYSTEM_PROFILE_CONF_DIR]);
    expect(profileFallbackDirs('/somewhere/else', {}, 1001)).toEqual([]);
    expect(profileFallbackDirs(SYSTEM_PROFILE_CONF_DIR, {}, 0)).toEqual([]);
    expect(profileFallbackDirs(userProfileConfDir({}), {}, 0)).toEqual([]);
  });
});

describe('reading a profile with a host-wide fallback', () => {
  let dir: string;
  const profile = (name: string, runCache: string): Profile => ({
    'schema-version': PROFILE_SCHEMA_VERSION, name, 'chroot-base': '/srv/jailer', 'run-cache': runCache, 'storage-provider': 'directory',
    'storage-provider-property-string': {}, 'storage-provider-property-int64': {}, 'tracing-enable': false, 'tracing-collector-host-port': '127.0.0.1:6831', 'tracing-log-enable': false,
  });
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-profiles-'));
    await new ProfileStore(path.join(dir, 'system')).write(profile('shared', '/sys/run'));
    await new ProfileStore(path.join(dir, 'system')).write(profile('both', '/sys/run'));
    await new ProfileStore(path.join(dir, 'user')).write(profile('both', '/user/run'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test("the user's own profile wins; one it lacks comes from the host-wide directory; list shows both", async () => {
    const store = new ProfileStore(path.join(dir, 'user'), [path.join(dir, 'system')]);
    expect((await store.read('both'))['run-cache']).toBe('/user/run');
    expect((await store.read('shared'))['run-cache']).toBe('/sys/run');
    expect(await store.list()).toEqual(['both', 'shared']);
  });

  test('a profile in neither is one line naming both directories; without a fallback only the one', async () => {
    const store = new ProfileStore(path.join(dir, 'user'), [path.join(dir, 'system')]);
    await expect(store.read('nope')).rejects.toThrow(new UserError(`profile 'nope' not found in ${path.join(dir, 'user')} or ${path.join(dir, 'system')}: create it with 'firebuild profile-create --profile nope ...' or list profiles with 'firebuild profile-ls'`));
    await expect(new ProfileStore(path.join(dir, 'user')).read('shared')).rejects.toThrow(/^profile 'shared' not found in [^ ]+\/user: /);
  });

  test('a missing own directory still finds the host-wide profile (a fresh runner user)', async () => {
    const store = new ProfileStore(path.join(dir, 'absent'), [path.join(dir, 'system')]);
    expect((await store.read('shared')).name).toBe('shared');
    expect(await store.list()).toEqual(['both', 'shared']);
  });
});

describe('root-only parts', () => {
  test('root has root access; another uid without the privileged helper has none', async () => {
    expect(await rootAccess({ uid: 0 })).toBe('root');
    expect(await rootAccess({ uid: 1001, helper: path.join(os.tmpdir(), `no-such-helper-${process.pid}`) })).toBe('none');
  });

  test('the refusal is one line naming runner-setup and the unprivileged alternative', () => {
    const e = needsRootError('the Firecracker backend (its jailer)', 'boot with the qemu backend');
    expect(e).toBeInstanceOf(UserError);
    expect(e.message).not.toContain('\n');
    expect(e.message).toMatch(/^the Firecracker backend \(its jailer\) needs root, and this runs as .* without firebuild's privileged helper: run runner-setup\/setup\.sh --privileged-vms on the host \(a sudo rule for \/usr\/local\/libexec\/firebuild-priv only\), or boot with the qemu backend$/);
  });

  test('backend auto passes Firecracker over when its jailer cannot run', () => {
    const firecracker = { binary: '/fc', jailer: '/jailer', chrootBase: '/srv/jailer', uid: 1, gid: 1, mode: 'api' as const };
    expect(chooseBackend({ backend: 'auto', firecracker })).toBe('firecracker');
    expect(chooseBackend({ backend: 'auto', firecracker, jailerUsable: false })).toBe('qemu');
    expect(chooseBackend({ backend: 'firecracker', firecracker, jailerUsable: false })).toBe('firecracker');
    expect(chooseBackend({ backend: 'auto', jailerUsable: true })).toBe('qemu');
  });
});

describe('the chroot base is the jailer\'s', () => {
  test('a QEMU-only profile (no jailer) needs no chroot base; with a jailer a missing one is one line', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-chroot-'));
    try {
      for (const d of ['run', 'rootfs', 'kernels']) fs.mkdirSync(path.join(dir, d));
      const jailer = path.join(dir, 'jailer');
      fs.writeFileSync(jailer, '#!/bin/sh\n', { mode: 0o755 });
      const flags = { chrootBase: path.join(dir, 'no-jail'), runCache: path.join(dir, 'run'), storageProviderPropertyString: [`rootfs-storage-root=${path.join(dir, 'rootfs')}`, `kernel-storage-root=${path.join(dir, 'kernels')}`] };
      await expect(validateForProfile(resolveSettings(flags, undefined))).resolves.toBeUndefined();
      await expect(validateForProfile(resolveSettings({ ...flags, binaryJailer: jailer }, undefined))).rejects.toThrow(`--chroot-base ${path.join(dir, 'no-jail')} does not exist`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
