import * as fsp from 'node:fs/promises';
import { constants } from 'node:fs';

/** What the host tells about KVM; gathered by `readKvmFacts`, judged by the pure `judgeKvm`. */
export interface KvmFacts {
  devKvmExists: boolean;
  devKvmOpenable: boolean;
  /** Loaded modules named kvm* (from /sys/module). */
  modules: string[];
  /** CPU flags of interest from /proc/cpuinfo. */
  cpuFlags: string[];
}

export type KvmKind = 'intel' | 'amd' | 'pvm' | 'none' | 'unknown';

export interface KvmVerdict {
  usable: boolean;
  kind: KvmKind;
  reason: string;
}

/**
 * A PVM-backed /dev/kvm (module kvm_pvm, no vmx/svm) runs only PVM-aware guests: a standard guest kernel
 * hangs at boot. firebuild treats it as unusable and boots with TCG instead.
 */
export function judgeKvm(f: KvmFacts): KvmVerdict {
  if (!f.devKvmExists) return { usable: false, kind: 'none', reason: '/dev/kvm does not exist (no hardware virtualisation exposed to this host)' };
  if (f.modules.includes('kvm_pvm')) {
    return { usable: false, kind: 'pvm', reason: '/dev/kvm is backed by PVM (kvm_pvm), under which standard guest kernels hang: use TCG (--accel tcg)' };
  }
  if (!f.devKvmOpenable) return { usable: false, kind: 'unknown', reason: '/dev/kvm is not readable and writable by this user: add the user to the kvm group or run as root' };
  if (f.modules.includes('kvm_intel') || f.cpuFlags.includes('vmx')) return { usable: true, kind: 'intel', reason: 'KVM (Intel VT-x)' };
  if (f.modules.includes('kvm_amd') || f.cpuFlags.includes('svm')) return { usable: true, kind: 'amd', reason: 'KVM (AMD-V)' };
  return { usable: true, kind: 'unknown', reason: 'KVM (kind not identified)' };
}

export async function readKvmFacts(root = '/'): Promise<KvmFacts> {
  const p = (s: string): string => (root === '/' ? s : root.replace(/\/$/, '') + s);
  const devKvmExists = await fsp.stat(p('/dev/kvm')).then(() => true, () => false);
  const devKvmOpenable = devKvmExists && (await fsp.access(p('/dev/kvm'), constants.R_OK | constants.W_OK).then(() => true, () => false));
  const modules = (await fsp.readdir(p('/sys/module')).catch(() => [] as string[])).filter((m) => m.startsWith('kvm'));
  const cpuinfo = await fsp.readFile(p('/proc/cpuinfo'), 'utf8').catch(() => '');
  const flagsLine = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1] ?? '';
  const cpuFlags = flagsLine.split(/\s+/).filter((x) => x === 'vmx' || x === 'svm' || x === 'hypervisor');
  return { devKvmExists, devKvmOpenable, modules, cpuFlags };
}

export async function detectKvm(root = '/'): Promise<KvmVerdict> {
  return judgeKvm(await readKvmFacts(root));
}
