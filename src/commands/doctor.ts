import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { constants } from 'node:fs';
import { DOCKER_START_HINT, dockerHint, dockerVersion } from '../engine/docker-client.js';
import type { Settings } from '../profile/settings.js';
import type { StorageProvider } from '../store/provider.js';
import { isStaticElf } from '../util/elf.js';
import { nearestExisting } from '../util/fs.js';
import { UserError } from '../util/errors.js';
import { exec, which } from '../util/exec.js';
import { checkIsolatedNet } from '../net/isolated-user.js';
import { PRIV_HELPER, RUNNER_SETUP_PRIVILEGED, currentUser, rootAccess } from '../util/privilege.js';
import { detectKvm } from '../vmm/kvm.js';
import { OPTIONAL_PARTS } from './doctor-parts.js';

export type CheckStatus = 'ok' | 'missing' | 'warn';

export interface CheckResult {
  part: string;
  status: CheckStatus;
  required: boolean;
  detail: string;
  fix?: string;
}

export { OPTIONAL_PARTS };

export interface DoctorOptions {
  settings: Settings;
  storage: StorageProvider;
  profileConfDir: string;
  require?: string[];
  cniBinDirs?: string[];
}

const INSTALL = 'run scripts/install-deps.sh';

/** Every part a build or run needs: ok / missing, with the fix. */
export async function doctor(o: DoctorOptions): Promise<CheckResult[]> {
  const required = new Set(o.require ?? []);
  for (const r of required) {
    if (!(OPTIONAL_PARTS as readonly string[]).includes(r)) {
      throw new UserError(`unknown --require part '${r}': choose from ${OPTIONAL_PARTS.join(', ')}`);
    }
  }
  const opt = (part: string): boolean => required.has(part);
  const results = await Promise.all([
    checkKvm(opt('kvm')),
    checkDocker(opt('docker')),
    checkQemu(),
    checkBinary('firecracker', o.settings.binaryFirecracker, opt('firecracker')),
    checkBinary('jailer', o.settings.binaryJailer, opt('jailer')),
    checkE2fsprogs(),
    checkBusybox(),
    checkIsolated(),
    checkCni(o.cniBinDirs ?? ['/usr/lib/cni', '/opt/cni/bin'], opt('cni')),
    checkKernel(o.storage, opt('kernel')),
    checkProfileDir(o.profileConfDir, opt('profile-dir')),
    checkPrivileges(opt('privileges')),
    checkStorage(o.storage, o.settings.origin['storage-provider-property-string.rootfs-storage-root'] === 'default'),
    checkDirWritable('run-cache', o.settings.runCache, o.settings.origin['run-cache'] === 'default'),
  ]);
  // A host needs one VMM: QEMU, or Firecracker with its jailer.
  const qemu = results.find((r) => r.part === 'qemu');
  const fc = results.find((r) => r.part === 'firecracker');
  const jailer = results.find((r) => r.part === 'jailer');
  const hasVmm = qemu?.status === 'ok' || (fc?.status === 'ok' && jailer?.status === 'ok');
  results.push({
    part: 'vmm',
    status: hasVmm ? 'ok' : 'missing',
    required: true,
    detail: hasVmm ? [qemu?.status === 'ok' ? 'qemu' : '', fc?.status === 'ok' && jailer?.status === 'ok' ? 'firecracker+jailer' : ''].filter(Boolean).join(', ') : 'neither QEMU nor Firecracker with its jailer',
    ...(hasVmm ? {} : { fix: `${INSTALL} (QEMU), or give --binary-firecracker and --binary-jailer` }),
  });
  return results;
}

export function missingRequired(results: CheckResult[]): CheckResult[] {
  return results.filter((r) => r.required && r.status !== 'ok');
}

function result(part: string, ok: boolean, required: boolean, detail: string, fix: string): CheckResult {
  if (ok) return { part, status: 'ok', required, detail };
  return { part, status: required ? 'missing' : 'warn', required, detail, fix };
}

async function checkKvm(required: boolean): Promise<CheckResult> {
  const v = await detectKvm();
  return result('kvm', v.usable, required, v.reason, v.kind === 'pvm' ? 'boot with TCG: --accel tcg (auto falls back to it) or FIREBUILD_ACCEL=tcg' : 'enable hardware virtualisation (nested virt on cloud hosts) or use --accel tcg');
}

async function checkDocker(required: boolean): Promise<CheckResult> {
  try {
    const v = await dockerVersion(undefined, 3000);
    return result('docker', true, required, `Docker engine ${v.version} (API ${v.apiVersion})`, '');
  } catch (err) {
    const hint = dockerHint((err as Error).cause ?? err);
    return result('docker', false, required, (err as Error).message.split(':')[0] ?? 'not reachable', hint === DOCKER_START_HINT ? `${INSTALL} to install and start it, or set DOCKER_HOST` : hint);
  }
}

async function checkQemu(): Promise<CheckResult> {
  const bin = await which('qemu-system-x86_64');
  if (!bin) return result('qemu', false, false, 'qemu-system-x86_64 not found', `${INSTALL} (package qemu-system-x86)`);
  const machines = await exec(bin, ['-machine', 'help'], { allowFailure: true });
  const version = (await exec(bin, ['--version'], { allowFailure: true })).stdout.split('\n')[0] ?? '';
  const microvm = /^microvm\s/m.test(machines.stdout);
  return result('qemu', microvm, false, microvm ? `${version} with -M microvm` : `${version} lacks the microvm machine`, 'install QEMU >= 4.2 (package qemu-system-x86)');
}

async function checkBinary(part: string, configured: string | undefined, required: boolean): Promise<CheckResult> {
  const bin = configured ?? (await which(part));
  if (!bin) return result(part, false, required, `${part} not found (optional on a QEMU-only host)`, `install ${part} and give --binary-${part} (runner-setup/ does this on KVM hosts)`);
  const ok = await fsp.access(bin, constants.X_OK).then(() => true, () => false);
  return result(part, ok, required, ok ? bin : `${bin} is not executable`, `chmod +x ${bin} or give another --binary-${part}`);
}

/** mkfs.ext4 -d (populate from a directory) arrived in e2fsprogs 1.43. */
async function checkE2fsprogs(): Promise<CheckResult> {
  const tools = ['mkfs.ext4', 'e2fsck', 'resize2fs', 'debugfs'];
  const found = await Promise.all(tools.map((t) => which(t)));
  const missing = tools.filter((_, i) => !found[i]);
  if (missing.length > 0) return result('e2fsprogs', false, true, `missing ${missing.join(', ')}`, `${INSTALL} (package e2fsprogs)`);
  const out = await exec(found[0] as string, ['-V'], { allowFailure: true });
  const m = /(\d+)\.(\d+)(?:\.(\d+))?/.exec(out.stderr + out.stdout);
  const ok = m !== null && (Number(m[1]) > 1 || (Number(m[1]) === 1 && Number(m[2]) >= 43));
  return result('e2fsprogs', ok, true, m ? `e2fsprogs ${m[0]}${ok ? ' (mkfs.ext4 -d)' : ' is older than 1.43 (no mkfs.ext4 -d)'}` : 'unknown version', 'install e2fsprogs >= 1.43');
}

async function checkBusybox(): Promise<CheckResult> {
  for (const p of ['/bin/busybox', '/usr/bin/busybox']) {
    const st = await fsp.stat(p).catch(() => undefined);
    if (st?.isFile() && (await isStaticElf(p))) return result('busybox-static', true, true, `${p} (static)`, '');
  }
  return result('busybox-static', false, true, 'no statically linked busybox found', `${INSTALL} (package busybox-static)`);
}

/** The default user-mode network runs QEMU in a namespace of its own behind slirp4netns (docs/runtime.md). */
async function checkIsolated(): Promise<CheckResult> {
  try {
    await checkIsolatedNet();
    return result('isolated-net', true, true, 'slirp4netns and user namespaces (VMs reach no host service)', '');
  } catch (err) {
    return result('isolated-net', false, true, (err as Error).message, `${INSTALL} (package slirp4netns) and allow user namespaces, or run VMs with --network none or CNI`);
  }
}

async function checkCni(dirs: string[], required: boolean): Promise<CheckResult> {
  const plugins = ['bridge', 'host-local', 'firewall'];
  for (const d of dirs) {
    const ok = await Promise.all(plugins.map((p) => fsp.access(path.join(d, p), constants.X_OK).then(() => true, () => false)));
    if (ok.every(Boolean)) return result('cni', true, required, `${d} (${plugins.join(', ')})`, '');
  }
  return result('cni', false, required, `CNI plugins ${plugins.join(', ')} not found in ${dirs.join(' or ')}`, `${INSTALL} (package containernetworking-plugins)`);
}

async function checkKernel(storage: StorageProvider, required: boolean): Promise<CheckResult> {
  const stored = (await storage.listKernels().catch(() => [])).filter((k) => !k.error);
  if (stored.length > 0) return result('kernel', true, required, `${stored.length} in kernel storage (${stored.map((k) => k.id).join(', ')})`, '');
  const boot = (await fsp.readdir('/boot').catch(() => [] as string[])).filter((f) => f.startsWith('vmlinuz-'));
  return result('kernel', false, required, boot.length > 0 ? `none imported; /boot has ${boot.join(', ')}` : 'no guest kernel', 'firebuild kernel build (the fast guest kernel), or firebuild kernel import --id ID /boot/vmlinuz-... --initrd /boot/initrd.img-...');
}

/** Root-only parts (the jailer, CNI): root, or the narrow sudo path runner-setup installs (util/privilege.ts). */
async function checkPrivileges(required: boolean): Promise<CheckResult> {
  const access = await rootAccess();
  const detail = access === 'root' ? 'root: the jailer and CNI networks are available'
    : access === 'helper' ? `${currentUser()} with sudo for ${PRIV_HELPER}: the jailer and CNI networks go through it`
      : `${currentUser()}: QEMU with user-mode networking and the vm engine run unprivileged; the jailer (Firecracker) and CNI networks need root`;
  return result('privileges', access !== 'none', required, detail, `${RUNNER_SETUP_PRIVILEGED} (a sudo rule for ${PRIV_HELPER} only)`);
}

async function checkProfileDir(dir: string, required: boolean): Promise<CheckResult> {
  const probe = await nearestExisting(dir);
  const ok = await fsp.access(probe, constants.W_OK).then(() => true, () => false);
  return result('profile-dir', ok, required, ok ? `${dir} writable` : `${dir} not writable`, "fix its permissions or pass --profile-conf-dir (a non-root user's default is ~/.config/firebuild/profiles)");
}

async function checkStorage(storage: StorageProvider, creatable: boolean): Promise<CheckResult> {
  const parts: string[] = [];
  for (const [key, dir] of Object.entries(storage.locations)) {
    const r = await checkDirWritable(key, dir, creatable);
    if (r.status !== 'ok') {
      // The built-in store is created on first write: a missing root whose parent is writable is fine.
      return { ...r, part: 'storage', required: true, status: 'missing' };
    }
    parts.push(`${key}=${dir}`);
  }
  return result('storage', true, true, parts.join(' '), '');
}

async function checkDirWritable(part: string, dir: string, creatable: boolean): Promise<CheckResult> {
  const probe = creatable ? await nearestExisting(dir) : dir;
  const st = await fsp.stat(probe).catch(() => undefined);
  if (!st?.isDirectory()) return result(part, false, true, `${dir} does not exist`, `mkdir -p ${dir}`);
  const ok = await fsp.access(probe, constants.W_OK).then(() => true, () => false);
  return result(part, ok, true, ok ? `${dir} writable` : `${dir} not writable`, `fix the permissions of ${dir}`);
}
