import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { planPackages, type Arch, type PackageNeeds } from './host-packages.js';
import { UserError } from '../util/errors.js';
import { exec, which } from '../util/exec.js';
import type { Logger } from '../util/logger.js';
import { readKvmFacts } from '../vmm/kvm.js';

/**
 * Preparing a fresh runner's host for firebuild (the setup action's install-packages, allow-userns and
 * enable-kvm inputs; on by default on GitHub-hosted runners): install the packages it lacks, allow the
 * unprivileged user namespaces the isolated network needs where AppArmor restricts them, and make
 * /dev/kvm usable by every user with the udev rule other actions use. Files are read and written under
 * `root` (`/` on a runner; a temp root in tests); commands that change the host (apt-get, udevadm) run
 * through `sudo -n`, which tests replace with a double on PATH.
 */

/** The rule public actions install on hosted runners (GitHub's larger runners document it too). */
export const KVM_UDEV_RULE = 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"\n';
export const KVM_UDEV_RULE_PATH = 'etc/udev/rules.d/99-kvm4all.rules';
/** Ubuntu >= 23.10: 1 lets unconfined processes create user namespaces without capabilities in them. */
export const USERNS_SYSCTL_PATH = 'proc/sys/kernel/apparmor_restrict_unprivileged_userns';

export type Privileged = (argv: string[], input?: string) => Promise<void>;

/**
 * A runner of commands as root: through `sudo -n` when sudo is on PATH (also as root, where it changes
 * nothing, so the path is the same everywhere), directly as root without sudo, else one line. Checked
 * once, at the first command: a host with nothing to change needs no sudo.
 */
export function privilegedRunner(log: Logger): Privileged {
  let prefix: Promise<string[]> | undefined;
  const resolve = async (): Promise<string[]> => {
    const sudo = await which('sudo');
    if (sudo) {
      const r = await exec(sudo, ['-n', 'true'], { allowFailure: true, timeoutMs: 30_000 });
      if (r.code === 0) return [sudo, '-n'];
      const why = (r.stderr.trim().split('\n')[0] ?? '') || `exit ${r.code}`;
      throw new UserError(`preparing this runner needs root or passwordless sudo, and sudo -n refuses (${why}): run the job where it may use sudo, or set install-packages, allow-userns and enable-kvm to false and prepare the host yourself (runner-setup/)`);
    }
    if (process.geteuid?.() === 0) return [];
    throw new UserError(`preparing this runner needs root or passwordless sudo, and sudo is not installed: set install-packages, allow-userns and enable-kvm to false and prepare the host yourself (runner-setup/)`);
  };
  return async (argv, input) => {
    const p = await (prefix ??= resolve());
    const [cmd, ...args] = [...p, ...argv];
    log.info(`$ ${p.length ? 'sudo -n ' : ''}${argv.join(' ')}`);
    const r = await exec(cmd!, args, { allowFailure: true, timeoutMs: 30 * 60_000, ...(input !== undefined ? { input } : {}) });
    if (r.code !== 0) throw new UserError(`${argv.join(' ')} failed (exit ${r.code}): ${(r.stderr.trim().split('\n').pop() ?? '') || r.stdout.trim().split('\n').pop() || 'no output'}`);
  };
}

/** Write `text` to `file` as root (tee: also right for /proc/sys, which must be written in place). */
async function writeAsRoot(run: Privileged, file: string, text: string): Promise<void> {
  await run(['install', '-d', '-m', '0755', path.dirname(file)]);
  await run(['tee', file], text);
}

export interface PackagesResult { os: string; installed: string[]; notes: string[] }

/** apt-get the packages `root`'s runner lacks for `needs` (nothing, and no sudo, when all are there). */
export async function installMissingPackages(root: string, arch: Arch, needs: Omit<PackageNeeds, 'kernelSourcePresent'>, run: Privileged, log: Logger): Promise<PackagesResult> {
  const plan = await planPackages(root, arch, needs);
  for (const n of plan.notes) log.warn(n);
  const os = `${plan.os.prettyName}`;
  if (!plan.missing.length) {
    log.info(`${os}: all ${plan.packages.length} packages firebuild needs are installed (${plan.packages.join(' ')})`);
    return { os, installed: [], notes: plan.notes };
  }
  log.info(`${os}: installing ${plan.missing.join(' ')}`);
  // sudo resets the environment: DEBIAN_FRONTEND goes through env(1) so no package asks a question.
  const apt = ['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get'];
  await run([...apt, 'update', '-q']);
  await run([...apt, 'install', '-y', '-q', '--no-install-recommends', ...plan.missing]);
  return { os, installed: plan.missing, notes: plan.notes };
}

/** 'allowed' (changed), 'unrestricted' (nothing to do: no AppArmor restriction on this kernel, or already 0). */
export async function allowUserNamespaces(root: string, run: Privileged, log: Logger): Promise<'allowed' | 'unrestricted'> {
  const file = path.join(root, USERNS_SYSCTL_PATH);
  const v = (await fsp.readFile(file, 'utf8').catch(() => '')).trim();
  if (v !== '1') return 'unrestricted';
  log.info('AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1): allowing them for the isolated user-mode network');
  await run(['tee', file], '0\n');
  return 'allowed';
}

export type KvmAccess = 'absent' | 'usable' | 'enabled' | 'not-usable';

/**
 * /dev/kvm for every user: the udev rule (mode 0666), reloaded and triggered for the kvm device, then
 * checked again (udev applies it asynchronously: a few tries). Nothing when there is no /dev/kvm (no
 * virtualisation to enable) or when the rule is in place and the device usable.
 */
export async function enableKvm(root: string, run: Privileged, log: Logger, o: { settleTries?: number; settleMs?: number } = {}): Promise<KvmAccess> {
  const facts = await readKvmFacts(root);
  if (!facts.devKvmExists) {
    log.info('this runner has no /dev/kvm: nothing to enable (GitHub exposes KVM on its x64 Linux runners; elsewhere use accel: tcg)');
    return 'absent';
  }
  const ruleFile = path.join(root, KVM_UDEV_RULE_PATH);
  const rule = await fsp.readFile(ruleFile, 'utf8').catch(() => undefined);
  if (rule === KVM_UDEV_RULE && facts.devKvmOpenable) return 'usable';
  if (rule !== KVM_UDEV_RULE) await writeAsRoot(run, ruleFile, KVM_UDEV_RULE);
  await run(['udevadm', 'control', '--reload-rules']);
  await run(['udevadm', 'trigger', '--name-match=kvm']);
  const tries = o.settleTries ?? 20;
  for (let i = 0; i < tries; i++) {
    if ((await readKvmFacts(root)).devKvmOpenable) return 'enabled';
    await new Promise((r) => setTimeout(r, o.settleMs ?? 250));
  }
  log.warn(`/dev/kvm is still not readable and writable by this user after the udev rule ${path.join('/', KVM_UDEV_RULE_PATH)}: is udev running? (later steps need accel: tcg)`);
  return 'not-usable';
}

export interface HostPrepOptions {
  /** `/` on a runner. */
  root: string;
  arch: Arch;
  installPackages: boolean;
  allowUserns: boolean;
  enableKvm: boolean;
  needs: Omit<PackageNeeds, 'kernelSourcePresent'>;
}

export interface HostPrepResult {
  packages?: PackagesResult;
  userns?: 'allowed' | 'unrestricted';
  kvm?: KvmAccess;
}

/** The three preparations, each when asked, in the order later ones rely on (packages first). */
export async function prepareHost(o: HostPrepOptions, log: Logger, run: Privileged = privilegedRunner(log)): Promise<HostPrepResult> {
  const out: HostPrepResult = {};
  if (o.installPackages) out.packages = await installMissingPackages(o.root, o.arch, o.needs, run, log);
  if (o.allowUserns) out.userns = await allowUserNamespaces(o.root, run, log);
  if (o.enableKvm) out.kvm = await enableKvm(o.root, run, log);
  return out;
}
