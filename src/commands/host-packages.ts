import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';

/**
 * Which Debian/Ubuntu packages a runner lacks for firebuild, decided from files only (so it is tested
 * under a temp root): the OS from os-release, what is installed from dpkg's status file, and what
 * firebuild needs on this architecture. The setup action installs the result on GitHub-hosted runners
 * (commands/host-prep.ts); scripts/install-deps.sh is the full list for a development host.
 */

export interface OsRelease {
  id: string;
  versionId: string;
  idLike: string[];
  prettyName: string;
}

/** os-release's KEY=value lines (values optionally quoted, as the spec allows). */
export function parseOsRelease(text: string): OsRelease {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    let v = m[2]!.trim();
    if (/^(["']).*\1$/.test(v)) v = v.slice(1, -1).replace(/\\(["'$`\\])/g, '$1');
    kv.set(m[1]!, v);
  }
  const id = (kv.get('ID') ?? 'linux').toLowerCase();
  return { id, versionId: kv.get('VERSION_ID') ?? '', idLike: (kv.get('ID_LIKE') ?? '').toLowerCase().split(/\s+/).filter(Boolean), prettyName: kv.get('PRETTY_NAME') ?? kv.get('NAME') ?? id };
}

/** `<root>/etc/os-release`, else `<root>/usr/lib/os-release` (the spec's fallback); undefined when neither exists. */
export async function readOsRelease(root: string): Promise<OsRelease | undefined> {
  for (const p of ['etc/os-release', 'usr/lib/os-release']) {
    const text = await fsp.readFile(path.join(root, p), 'utf8').catch(() => undefined);
    if (text !== undefined) return parseOsRelease(text);
  }
  return undefined;
}

/** The packages dpkg's status file records as installed ("install ok installed", "hold ok installed"; not "config-files"). */
export function parseDpkgStatus(text: string): Set<string> {
  const installed = new Set<string>();
  for (const para of text.split(/\n\s*\n/)) {
    const name = /^Package:\s*(\S+)/m.exec(para)?.[1];
    const status = /^Status:\s*(.*)$/m.exec(para)?.[1]?.trim().split(/\s+/);
    if (name && status?.[2] === 'installed') installed.add(name);
  }
  return installed;
}

export async function readInstalledPackages(root: string): Promise<Set<string>> {
  return parseDpkgStatus(await fsp.readFile(path.join(root, 'var/lib/dpkg/status'), 'utf8').catch(() => ''));
}

export type Family = 'debian' | 'ubuntu';

/** Ubuntu and its derivatives (ID_LIKE ubuntu) first: they are Debian-like too but package differently. */
export function osFamily(os: OsRelease): Family | undefined {
  if (os.id === 'ubuntu' || os.idLike.includes('ubuntu')) return 'ubuntu';
  if (os.id === 'debian' || os.idLike.includes('debian')) return 'debian';
  return undefined;
}

export type Arch = 'x86_64' | 'aarch64';

export interface PackageNeeds {
  /** QEMU is the VMM (not needed when only Firecracker runs). */
  qemu: boolean;
  /** The kernel series setup builds (input kernel-version), e.g. 6.1. */
  kernelVersion?: string;
  /** The kernel source tarball is already in place (/usr/src/linux-source-<version>.tar.xz). */
  kernelSourcePresent?: boolean;
}

export interface PackageChoice {
  packages: string[];
  /** Lines to log: what could not be provided by a package on this OS and why. */
  notes: string[];
}

/**
 * The packages firebuild needs here, with Debian 12 and Ubuntu 24.04 names (they agree except for the
 * kernel source): QEMU for the architecture, e2fsprogs (mkfs.ext4 -d, debugfs), a static busybox (the
 * guest init's tools), slirp4netns and iproute2 (the isolated user-mode network), zstd (cache packages),
 * and for a kernel build Debian's linux-source-<version> with the build tools. The Docker engine is left
 * out: GitHub-hosted runners have one, and docker.io conflicts with the docker-ce/moby packages they use.
 */
export function packagesFor(os: OsRelease, arch: Arch, needs: PackageNeeds): PackageChoice {
  const family = osFamily(os);
  if (!family) {
    throw new UserError(`installing packages needs Debian or Ubuntu (apt); this runner is ${os.prettyName} (ID=${os.id}): install QEMU, e2fsprogs, busybox (static), slirp4netns and zstd yourself and set install-packages: false`);
  }
  const packages = ['e2fsprogs', 'busybox-static', 'slirp4netns', 'iproute2', 'zstd'];
  const notes: string[] = [];
  if (needs.qemu) packages.push(arch === 'aarch64' ? 'qemu-system-arm' : 'qemu-system-x86');
  if (needs.kernelVersion) {
    packages.push('build-essential', 'bc', 'bison', 'flex', 'libelf-dev', 'libssl-dev', 'xz-utils');
    if (needs.kernelSourcePresent) {
      // A tarball put there by an earlier step (the kernel.org release, on Ubuntu) or by a package.
    } else if (family === 'debian') {
      packages.push(`linux-source-${needs.kernelVersion}`);
    } else {
      notes.push(`Ubuntu does not package Debian's linux-source-${needs.kernelVersion}: put the kernel.org tarball at /usr/src/linux-source-${needs.kernelVersion}.tar.xz before setup (workflows/pr-smoke-hosted.yml shows how), or import a kernel with kernel-path`);
    }
  }
  return { packages: [...new Set(packages)].sort(), notes };
}

export interface PackagePlan extends PackageChoice {
  os: OsRelease;
  missing: string[];
}

/** What `root`'s OS needs for `needs` and which of it dpkg does not have installed (sorted). */
export async function planPackages(root: string, arch: Arch, needs: Omit<PackageNeeds, 'kernelSourcePresent'>): Promise<PackagePlan> {
  const os = await readOsRelease(root);
  if (!os) throw new UserError(`${path.join(root, 'etc/os-release')} does not exist: cannot tell which packages this runner needs; install them yourself and set install-packages: false`);
  const kernelSourcePresent = needs.kernelVersion ? await fsp.stat(path.join(root, `usr/src/linux-source-${needs.kernelVersion}.tar.xz`)).then((s) => s.isFile(), () => false) : false;
  const choice = packagesFor(os, arch, { ...needs, kernelSourcePresent });
  const installed = await readInstalledPackages(root);
  return { os, ...choice, missing: choice.packages.filter((p) => !installed.has(p)) };
}
