import * as os from 'node:os';
import * as path from 'node:path';
import type { HostPrepOptions, HostPrepResult } from '../../commands/host-prep.js';
import { input } from '../common.js';

/**
 * The setup action's host inputs: install-packages, allow-userns and enable-kvm, each auto|true|false,
 * where auto means "on a GitHub-hosted runner" (RUNNER_ENVIRONMENT=github-hosted, which the runner sets):
 * a fresh hosted VM lacks firebuild's packages and the runner user cannot open /dev/kvm, while a
 * self-hosted runner was prepared by runner-setup/ and is left alone.
 * FIREBUILD_TEST_HOST_ROOT is for tests only: the host's files (os-release, dpkg status, /dev/kvm, the
 * udev rule, /proc/sys) are read and written under that directory instead of /.
 */
export const HOST_CHOICES = ['auto', 'true', 'false'] as const;

export function getHostInputs(env: NodeJS.ProcessEnv = process.env): Omit<HostPrepOptions, 'needs'> {
  const hosted = env.RUNNER_ENVIRONMENT === 'github-hosted';
  const opts = { choices: HOST_CHOICES, default: 'auto' };
  const on = (v: string): boolean => v === 'true' || (v === 'auto' && hosted);
  return {
    root: path.resolve(env.FIREBUILD_TEST_HOST_ROOT || '/'),
    arch: os.arch() === 'arm64' ? 'aarch64' : 'x86_64',
    installPackages: on(input('install-packages', opts)),
    allowUserns: on(input('allow-userns', opts)),
    enableKvm: on(input('enable-kvm', opts)),
  };
}

/** Summary rows for what was done. */
export function hostRows(r: HostPrepResult): [string, string][] {
  const rows: [string, string][] = [];
  if (r.packages) rows.push(['packages', r.packages.installed.length ? `installed ${r.packages.installed.join(', ')} (${r.packages.os})` : `all present (${r.packages.os})`]);
  if (r.userns) rows.push(['user namespaces', r.userns === 'allowed' ? 'allowed (AppArmor restriction lifted)' : 'unrestricted']);
  if (r.kvm) rows.push(['/dev/kvm access', { absent: 'no /dev/kvm', usable: 'usable', enabled: 'enabled for every user (udev rule)', 'not-usable': 'still not usable after the udev rule' }[r.kvm]]);
  return rows;
}
