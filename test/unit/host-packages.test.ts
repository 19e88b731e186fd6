import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { osFamily, packagesFor, parseDpkgStatus, parseOsRelease, planPackages } from '../../src/commands/host-packages.js';
import { KVM_UDEV_RULE, KVM_UDEV_RULE_PATH, USERNS_SYSCTL_PATH, allowUserNamespaces, enableKvm, installMissingPackages, type Privileged } from '../../src/commands/host-prep.js';
import { UserError } from '../../src/util/errors.js';
import { MemoryLogger } from '../../src/util/logger.js';

/** os-release as the two supported systems ship it (Debian 12's /usr/lib/os-release, Ubuntu 24.04's). */
const DEBIAN_12 = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
`;
const UBUNTU_2404 = `PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
LOGO=ubuntu-logo
`;
const MINT = 'NAME="Linux Mint"\nID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_ID="22"\n';
const FEDORA = 'NAME="Fedora Linux"\nVERSION_ID=40\nID=fedora\nPRETTY_NAME="Fedora Linux 40 (Workstation Edition)"\n';

const BASE = ['busybox-static', 'e2fsprogs', 'iproute2', 'slirp4netns', 'zstd'];
const KERNEL_TOOLS = ['bc', 'bison', 'build-essential', 'flex', 'libelf-dev', 'libssl-dev', 'xz-utils'];
const sorted = (a: string[]): string[] => [...a].sort();

/** A dpkg status file: each package in the given state. */
function dpkgStatus(pkgs: Record<string, string>): string {
  return Object.entries(pkgs).map(([p, st]) => `Package: ${p}\nStatus: ${st}\nPriority: optional\nArchitecture: amd64\nVersion: 1.0\nDescription: ${p}\n multi-line description\n`).join('\n');
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-hostpkg-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let n = 0;
function fakeRoot(files: Record<string, string>): string {
  const root = path.join(tmp, `root${n++}`);
  for (const [p, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    fs.writeFileSync(path.join(root, p), text);
  }
  return root;
}

describe('the package decision', () => {
  test('os-release: quoted values, ID_LIKE as a list, the family', () => {
    expect(parseOsRelease(DEBIAN_12)).toEqual({ id: 'debian', versionId: '12', idLike: [], prettyName: 'Debian GNU/Linux 12 (bookworm)' });
    expect(parseOsRelease(UBUNTU_2404)).toMatchObject({ id: 'ubuntu', versionId: '24.04', idLike: ['debian'] });
    expect(osFamily(parseOsRelease(DEBIAN_12))).toBe('debian');
    expect(osFamily(parseOsRelease(UBUNTU_2404))).toBe('ubuntu');
    expect(osFamily(parseOsRelease(MINT))).toBe('ubuntu');
    expect(osFamily(parseOsRelease(FEDORA))).toBeUndefined();
  });

  test('Debian 12 x86_64 with a kernel build: QEMU for x86, Debian\'s linux-source and the build tools', () => {
    const c = packagesFor(parseOsRelease(DEBIAN_12), 'x86_64', { qemu: true, kernelVersion: '6.1' });
    expect(c.packages).toEqual(sorted([...BASE, 'qemu-system-x86', ...KERNEL_TOOLS, 'linux-source-6.1']));
    expect(c.notes).toEqual([]);
  });

  test('Ubuntu 24.04 aarch64 with a kernel build: QEMU for Arm, no linux-source-6.1 (Ubuntu has none) but one note saying what to do', () => {
    const c = packagesFor(parseOsRelease(UBUNTU_2404), 'aarch64', { qemu: true, kernelVersion: '6.1' });
    expect(c.packages).toEqual(sorted([...BASE, 'qemu-system-arm', ...KERNEL_TOOLS]));
    expect(c.notes).toHaveLength(1);
    expect(c.notes[0]).toMatch(/^Ubuntu does not package Debian's linux-source-6\.1: put the kernel\.org tarball at \/usr\/src\/linux-source-6\.1\.tar\.xz/);
    // The tarball already in place: no note, and on Debian no package for it either.
    expect(packagesFor(parseOsRelease(UBUNTU_2404), 'aarch64', { qemu: true, kernelVersion: '6.1', kernelSourcePresent: true }).notes).toEqual([]);
    expect(packagesFor(parseOsRelease(DEBIAN_12), 'x86_64', { qemu: true, kernelVersion: '6.1', kernelSourcePresent: true }).packages).not.toContain('linux-source-6.1');
  });

  test('x86_64 vs aarch64, and no QEMU when only Firecracker runs', () => {
    const os12 = parseOsRelease(DEBIAN_12);
    expect(packagesFor(os12, 'x86_64', { qemu: true }).packages).toEqual(sorted([...BASE, 'qemu-system-x86']));
    expect(packagesFor(os12, 'aarch64', { qemu: true }).packages).toEqual(sorted([...BASE, 'qemu-system-arm']));
    expect(packagesFor(os12, 'x86_64', { qemu: false }).packages).toEqual(BASE);
  });

  test('an unknown OS is one line naming it and the way out', () => {
    let err: unknown;
    try {
      packagesFor(parseOsRelease(FEDORA), 'x86_64', { qemu: true });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/^installing packages needs Debian or Ubuntu \(apt\); this runner is Fedora Linux 40 \(Workstation Edition\) \(ID=fedora\): .*set install-packages: false$/);
    expect((err as Error).message).not.toContain('\n');
  });

  test('dpkg status: installed and held packages count, removed ones (config-files) and half-installed ones do not', () => {
    const s = parseDpkgStatus(dpkgStatus({ a: 'install ok installed', b: 'hold ok installed', c: 'deinstall ok config-files', d: 'install reinstreq half-installed' }));
    expect([...s].sort()).toEqual(['a', 'b']);
  });

  test('under a root: the OS from etc/os-release (or usr/lib/os-release), the installed set from var/lib/dpkg/status', async () => {
    const all = Object.fromEntries([...BASE, 'qemu-system-x86'].map((p) => [p, 'install ok installed']));
    const full = fakeRoot({ 'etc/os-release': UBUNTU_2404, 'var/lib/dpkg/status': dpkgStatus(all) });
    expect((await planPackages(full, 'x86_64', { qemu: true })).missing).toEqual([]);
    const partial = fakeRoot({ 'usr/lib/os-release': DEBIAN_12, 'var/lib/dpkg/status': dpkgStatus({ e2fsprogs: 'install ok installed', zstd: 'install ok installed', 'qemu-system-x86': 'deinstall ok config-files' }) });
    const plan = await planPackages(partial, 'x86_64', { qemu: true, kernelVersion: '6.1' });
    expect(plan.os.id).toBe('debian');
    expect(plan.missing).toEqual(sorted(['busybox-static', 'iproute2', 'slirp4netns', 'qemu-system-x86', ...KERNEL_TOOLS, 'linux-source-6.1']));
    // The Debian kernel tarball already there: its package is not asked for.
    fs.mkdirSync(path.join(partial, 'usr/src'), { recursive: true });
    fs.writeFileSync(path.join(partial, 'usr/src/linux-source-6.1.tar.xz'), 'x');
    expect((await planPackages(partial, 'x86_64', { qemu: true, kernelVersion: '6.1' })).missing).not.toContain('linux-source-6.1');
    await expect(planPackages(fakeRoot({}), 'x86_64', { qemu: true })).rejects.toThrow(/etc\/os-release does not exist: cannot tell which packages this runner needs/);
  });
});

/**
 * A stand-in for `sudo -n`: records every command; runs the file writes (install -d, tee: under the
 * temp root) and only records the ones that would change this host (apt-get, udevadm).
 */
function recorder(): { run: Privileged; calls: string[][] } {
  const calls: string[][] = [];
  const run: Privileged = async (argv, input) => {
    calls.push(argv);
    if (argv[0] === 'install' || argv[0] === 'tee') execFileSync(argv[0], argv.slice(1), { input: input ?? '', stdio: ['pipe', 'ignore', 'inherit'] });
  };
  return { run, calls };
}

describe('the host preparations under a temp root', () => {
  const log = new MemoryLogger();

  test('packages: apt-get update then install of exactly the missing ones; nothing at all when none is missing', async () => {
    const root = fakeRoot({ 'etc/os-release': UBUNTU_2404, 'var/lib/dpkg/status': dpkgStatus({ e2fsprogs: 'install ok installed', zstd: 'install ok installed', iproute2: 'install ok installed' }) });
    const r = recorder();
    const got = await installMissingPackages(root, 'x86_64', { qemu: true }, r.run, log);
    expect(got.installed).toEqual(['busybox-static', 'qemu-system-x86', 'slirp4netns']);
    expect(r.calls).toEqual([
      ['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'update', '-q'],
      ['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'install', '-y', '-q', '--no-install-recommends', 'busybox-static', 'qemu-system-x86', 'slirp4netns'],
    ]);
    const done = fakeRoot({ 'etc/os-release': UBUNTU_2404, 'var/lib/dpkg/status': dpkgStatus(Object.fromEntries([...BASE, 'qemu-system-x86'].map((p) => [p, 'install ok installed']))) });
    const r2 = recorder();
    expect((await installMissingPackages(done, 'x86_64', { qemu: true }, r2.run, log)).installed).toEqual([]);
    expect(r2.calls).toEqual([]);
  });

  test('user namespaces: the AppArmor switch is set to 0 only when it reads 1', async () => {
    const restricted = fakeRoot({ [USERNS_SYSCTL_PATH]: '1\n' });
    const r = recorder();
    expect(await allowUserNamespaces(restricted, r.run, log)).toBe('allowed');
    expect(r.calls).toEqual([['tee', path.join(restricted, USERNS_SYSCTL_PATH)]]);
    expect(fs.readFileSync(path.join(restricted, USERNS_SYSCTL_PATH), 'utf8')).toBe('0\n');
    const r2 = recorder();
    expect(await allowUserNamespaces(restricted, r2.run, log)).toBe('unrestricted');
    expect(await allowUserNamespaces(fakeRoot({}), r2.run, log)).toBe('unrestricted');
    expect(r2.calls).toEqual([]);
  });

  test('KVM: the udev rule written, rules reloaded, the kvm device triggered; once in place nothing more; no /dev/kvm: nothing', async () => {
    const root = fakeRoot({ 'dev/kvm': '' });
    const r = recorder();
    expect(await enableKvm(root, r.run, log)).toBe('enabled');
    const rule = path.join(root, KVM_UDEV_RULE_PATH);
    expect(r.calls).toEqual([
      ['install', '-d', '-m', '0755', path.dirname(rule)],
      ['tee', rule],
      ['udevadm', 'control', '--reload-rules'],
      ['udevadm', 'trigger', '--name-match=kvm'],
    ]);
    expect(fs.readFileSync(rule, 'utf8')).toBe('KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"\n');
    expect(KVM_UDEV_RULE).toBe(fs.readFileSync(rule, 'utf8'));
    const again = recorder();
    expect(await enableKvm(root, again.run, log)).toBe('usable');
    expect(again.calls).toEqual([]);
    const none = recorder();
    expect(await enableKvm(fakeRoot({}), none.run, log)).toBe('absent');
    expect(none.calls).toEqual([]);
  });
});
