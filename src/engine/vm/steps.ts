import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BuildContext } from '../../source/context.js';
import type { Step } from '../../dockerfile/plan-schema.js';
import { injectGuest, removeGuest } from '../../guest/prepare.js';
import { Debugfs, mayBeMissing, quote, type WriteCommand } from '../../rootfs/debugfs.js';
import { Ext4Image } from '../../rootfs/ext4-read.js';
import { Ext4Tools } from '../../rootfs/ext4.js';
import { DEFAULT_LOCK_DIR, type NetworkMode } from '../../net/network.js';
import { followConsole, lineKind } from '../../runtime/console.js';
import { launchVm, type LaunchSpec } from '../../runtime/launch.js';
import { RunCache, vmmOf } from '../../runtime/state.js';
import { teardown } from '../../runtime/stop.js';
import { vmmAlive } from '../../runtime/vmm-process.js';
import type { Downloads } from '../../source/downloads.js';
import type { StorageProvider } from '../../store/provider.js';
import { diskFullError } from '../../util/disk-space.js';
import { throwIfCancelled } from '../../util/cleanup.js';
import { UserError } from '../../util/errors.js';
import { copySparse } from '../../util/fs.js';
import type { Logger } from '../../util/logger.js';
import type { SecretSource } from '../../util/secrets.js';
import { applyCopy, applyWorkdir, chownOwner, imageAccounts, userOwner } from '../vm-fs.js';
import { DISK_FULL_HINT } from './disk.js';
import type { StepState } from './plan.js';
import { stepNetwork } from './mounts.js';
import type { PlannedMount } from './plan.js';
import { prepareMounts, type PreparedMounts } from './run-mounts.js';
import { makeMountStubs, removeMountStubs, secretMounts, stepSecrets } from './secrets.js';
import { startSshRelays, sshEnv, sshMounts, stepSshAgents } from './ssh.js';
import type { SshAgentSource } from '../../util/ssh-agent.js';
import { jailedMountDrive } from '../../vmm/firecracker-run.js';

/**
 * The vm engine's step execution on a stage's ext4 image: RUN boots the image as a microVM with the
 * step's command, environment, USER and WORKDIR on the config disk, streams its output, and checks the
 * image after the guest has shut down; COPY, ADD and WORKDIR are applied offline (vm-fs.ts).
 */

export const DEFAULT_STEP_TIMEOUT_MS = 30 * 60_000;
const GUEST_WRITTEN = ['/etc/hostname', '/etc/hosts', '/etc/resolv.conf'];
/** How long the build disk's file system may stay full while a RUN's VM keeps running. */
const FULL_GRACE_MS = 20_000;

/** How build VMs boot: the runtime's settings (backend, network, Firecracker, run cache), shared with `firebuild run`. */
export interface BuildVmSettings {
  backend: LaunchSpec['backend'];
  /** `user` (QEMU's user-mode networking), `cni` (the CNI build network, e.g. machine-builds) or `none`. */
  network: NetworkMode;
  cni?: LaunchSpec['cni'];
  firecracker?: LaunchSpec['firecracker'];
  /** The run cache: build VMs show in `firebuild ls` while they run, and `purge` removes what a killed build left. */
  runCache: string;
  /** The cgroup subtree of the run cache's VMs (a runner instance's own; default firebuild). */
  cgroupParent?: string;
  lockDir?: string;
}

/** What every RUN of one build boots with; `bootMs` adds up the boots. */
export interface BootContext {
  vm: BuildVmSettings;
  storage: StorageProvider;
  vmlinuxId?: string;
  accel: string;
  memMib: number;
  stepTimeoutMs: number;
  log: Logger;
  tag: string;
  bootMs: number;
  /** The build's secrets by id (--secret; the action's secrets, secret-files, secret-envs): read when a RUN mounts one. */
  secrets: ReadonlyMap<string, SecretSource>;
  /** The build's ssh agents by id (--ssh; the action's ssh input): forwarded when a RUN mounts one. */
  sshAgents?: ReadonlyMap<string, SshAgentSource>;
  /** Where RUN --mount=type=cache volumes live (vm/cache-volumes.ts). */
  cacheMounts: string;
}

/** What the file-system steps of one stage read besides the image: the build context, downloads, and the image of a `COPY --from`. */
export interface StepInputs {
  context: BuildContext;
  downloads: Downloads;
  /** The ext4 file a `COPY --from` reads (a stage's or an external image's). */
  fromImage: (step: Step) => Promise<string | undefined>;
  /** A fresh directory for the step's scratch files (removed after the step). */
  scratch: string;
  /** A RUN's cache, bind and tmpfs mounts (planned: vm/plan.ts). */
  mounts?: PlannedMount[];
  /** The ext4 of an earlier stage, and of an image a mount names (materialized once per build). */
  stageImage?: (stage: number) => string | undefined;
  externalImage?: (ref: string, where: { file: string; line: number }) => Promise<string>;
}

/** One file-system step (RUN, COPY, ADD, WORKDIR) applied to `image`. */
export async function executeStep(image: string, step: Step, st: StepState, b: BootContext, x: StepInputs): Promise<void> {
  const stepWhere = { file: step.file, line: step.line };
  if (step.keyword === 'RUN') {
    await runStep(image, step, st, b, x);
  } else if (step.keyword === 'WORKDIR') {
    await applyWorkdir(image, st.workdir, userOwner(st.user, await imageAccounts(image), stepWhere), stepWhere);
  } else {
    const accounts = await imageAccounts(image);
    const owner = chownOwner(step.chown, accounts, stepWhere);
    const fromImage = await x.fromImage(step);
    await fsp.mkdir(x.scratch);
    const dest = step.dest!.startsWith('/') ? step.dest! : path.posix.join(st.workdir, step.dest!) + (step.dest!.endsWith('/') ? '/' : '');
    await applyCopy(image, { step, dest, context: x.context, ...(fromImage ? { fromImage } : {}), owner, chowned: step.chown !== undefined && step.chown !== '', scratch: x.scratch, downloads: x.downloads });
    await fsp.rm(x.scratch, { recursive: true, force: true });
  }
}

/**
 * A RUN's argv. Heredocs follow BuildKit: `RUN <<EOF` alone runs the document as the shell's script;
 * `RUN cmd <<EOF` hands the shell the command line with the documents after it, so the shell feeds them.
 */
export function runArgv(step: Step): string[] {
  const command = step.command ?? [];
  if (!step.heredocs?.length || step.form !== 'shell') return command;
  const shell = step.shell ?? ['/bin/sh', '-c'];
  const line = command[command.length - 1] ?? '';
  const only = /^<<-?(["']?)([A-Za-z_][A-Za-z0-9_]*)\1$/.exec(line.trim());
  if (only && step.heredocs.length === 1) return [...shell, step.heredocs[0]!.content];
  return [...shell, [line, ...step.heredocs.map((h) => `${h.content}${h.content.endsWith('\n') ? '' : '\n'}${h.name}`)].join('\n')];
}

interface Saved { path: string; data?: string; mode?: string; uid?: string; gid?: string }

/** The files the init writes into the image (hostname, hosts, resolv.conf): saved before a RUN, put back after, as Docker's bind mounts leave the image untouched. */
async function saveGuestWritten(image: string, scratch: string): Promise<Saved[]> {
  const saved: Saved[] = [];
  // Read in-process into scratch files firebuild names (0600): the image's own names and modes stay in the image.
  const img = await Ext4Image.open(image);
  try {
    for (const [i, p] of GUEST_WRITTEN.entries()) {
      const e = await img.stat(p);
      if (e?.type !== 'file') {
        saved.push({ path: p });
        continue;
      }
      const host = path.join(scratch, `saved-${i}`);
      const fh = await fsp.open(host, 'wx', 0o600);
      try {
        for await (const c of img.readFile(e.ino)) await fh.write(c);
      } finally {
        await fh.close();
      }
      saved.push({ path: p, data: host, mode: e.mode.toString(8).padStart(4, '0'), uid: String(e.uid), gid: String(e.gid) });
    }
  } finally {
    await img.close();
  }
  return saved;
}

/**
 * Put back what saveGuestWritten saved (and remove what the init wrote where the image had no file). A
 * restore that did not take is an error naming the step: the image would otherwise keep the build VM's
 * hostname, hosts or resolv.conf.
 */
async function restoreGuestWritten(image: string, saved: Saved[], label: string, where: { file: string; line: number }): Promise<void> {
  const cmds: WriteCommand[] = [];
  for (const s of saved) {
    // The RUN may have removed the file: only its absence is expected; a failed write of the saved one fails the step.
    cmds.push(mayBeMissing(`rm ${quote(s.path)}`));
    if (s.data) cmds.push(`write ${quote(s.data)} ${quote(s.path)}`, `sif ${quote(s.path)} mode 0100${s.mode!.slice(-3)}`, `sif ${quote(s.path)} uid ${s.uid}`, `sif ${quote(s.path)} gid ${s.gid}`);
  }
  await new Debugfs(image).write(cmds).catch((err: Error) => {
    throw new UserError(`${label}: could not restore the image's ${saved.map((x) => x.path).join(', ')} after the step (${err.message})`, where);
  });
}

/** RUN: boot the image with the step's command; returns once the guest has powered off. */
async function runStep(image: string, step: Step, state: { user: string; workdir: string }, b: BootContext, x: StepInputs): Promise<void> {
  const where = { file: step.file, line: step.line };
  const label = `RUN at ${path.basename(step.file)}:${step.line}`;
  // RUN --mount=type=secret: the values go to this VM's config disk only; a required one missing stops here.
  const secrets = await stepSecrets(secretMounts(step, state.workdir), b.secrets, label, where, b.log);
  // RUN --mount=type=ssh: a required agent missing stops here too; SSH_AUTH_SOCK as BuildKit sets it.
  const ssh = sshMounts(step, state.workdir);
  const agents = await stepSshAgents(ssh, b.sshAgents ?? new Map(), label, where, b.log);
  const scratch = path.join(path.dirname(image), `run-${step.line}`);
  await fsp.mkdir(scratch, { recursive: true });
  // RUN --mount=type=cache|bind|tmpfs: drives and guest mounts (cache locks held until the VM is gone).
  const prepared = await prepareMounts(x.mounts ?? [], {
    cacheRoot: b.cacheMounts, context: x.context, downloads: x.downloads, scratch, backend: b.vm.backend === 'firecracker' ? 'firecracker' : 'qemu',
    timeoutMs: b.stepTimeoutMs, log: b.log, label, where,
    stageImage: (s) => x.stageImage?.(s),
    externalImage: async (ref) => {
      if (!x.externalImage) throw new UserError(`${label}: the image ${ref} is not available`, where);
      return x.externalImage(ref, where);
    },
  });
  try {
    await bootStep(image, step, state, b, { label, where, scratch, secrets, prepared, ssh, agents });
  } finally {
    await prepared.release();
  }
}

async function bootStep(image: string, step: Step, state: { user: string; workdir: string }, b: BootContext, r: { label: string; where: { file: string; line: number }; scratch: string; secrets: Awaited<ReturnType<typeof stepSecrets>>; prepared: PreparedMounts; ssh: ReturnType<typeof sshMounts>; agents: Awaited<ReturnType<typeof stepSshAgents>> }): Promise<void> {
  const { label, where, scratch, secrets, prepared, ssh, agents } = r;
  const saved = await saveGuestWritten(image, scratch);
  // The mounts' targets first: a secret may go inside one.
  const stubs = await makeMountStubs(image, [...prepared.stubs, ...secrets.flatMap((x) => (x.target ? [x.target] : []))], label, where);
  stubs.push(...(await makeMountStubs(image, agents.map((a) => a.guest.target), label, where, "the ssh agent's target")));
  // RUN --network=none: this step's VM has no network.
  const network = stepNetwork(step) === 'none' ? 'none' : b.vm.network;
  await injectGuest(image);
  const cache = new RunCache(b.vm.runCache, { cgroupParent: b.vm.cgroupParent });
  const lockDir = b.vm.lockDir ?? DEFAULT_LOCK_DIR;
  const started = Date.now();
  const spec: LaunchSpec = {
    from: b.tag, memMib: b.memMib, cpus: Math.max(1, Math.min(2, os.cpus().length)), env: [], ports: [],
    network, ...(b.vm.cni && network === 'cni' ? { cni: b.vm.cni } : {}), ...(b.vm.firecracker ? { firecracker: b.vm.firecracker } : {}),
    backend: b.vm.backend, accel: b.accel, ...(b.vmlinuxId ? { vmlinuxId: b.vmlinuxId } : {}), bootTimeoutMs: b.stepTimeoutMs, lockDir,
    build: {
      rootfs: image, label: `build of ${b.tag} (${label})`, ...(prepared.drives.length ? { drives: prepared.drives } : {}),
      config: {
        hostname: 'buildkitsandbox', env: sshEnv(ssh, step.env ?? []), command: runArgv(step), user: state.user, workdir: state.workdir, stopSignal: 'TERM', build: true,
        ...(secrets.length ? { secrets } : {}), ...(prepared.guest.length ? { mounts: prepared.guest } : {}), ...(agents.length ? { sshAgents: agents.map((a) => a.guest) } : {}),
      },
    },
  };
  // The agents' host relays live as long as the VM (owned: closed on failure and cancel too).
  const relays = startSshRelays(agents, label, b.log);
  if (relays.channels.length) spec.build!.channels = relays.channels;
  const vm = await launchVm(spec, b.storage, cache, b.log.child('vm')).catch(async (err: unknown) => {
    await relays.close();
    throw err;
  });
  b.bootMs += Date.now() - started;
  // Stream the command's output (the console between the init's start and exit lines) as it comes.
  let partial = '';
  let running = false;
  const tail: string[] = [];
  let exitCode: number | undefined;
  const take = (l: string): void => {
    const k = lineKind(l);
    if (k.kind === 'start') running = true;
    else if (k.kind === 'exit') {
      exitCode = k.code;
      running = false;
    } else if (running || /^firebuild-init:/.test(l)) {
      b.log.info(`${label}: ${l}`);
      tail.push(l);
      if (tail.length > 20) tail.shift();
    }
  };
  const deadline = AbortSignal.timeout(Math.max(0, started + b.stepTimeoutMs - Date.now()));
  // A full host disk: QEMU reports the failed writes to the guest (werror=report), whose command then
  // fails; should the guest hang on them instead, a disk that stays full ends the step after a grace.
  const full = (): Promise<UserError | undefined> => diskFullError(image, `the build disk of ${label}`, DISK_FULL_HINT, where);
  let fullSince = 0;
  let lastCheck = 0;
  try {
    for await (const chunk of followConsole(vm.serialLog, vmmOf(vm), { signal: deadline, pollMs: 200, ticks: true })) {
      const lines = (partial + chunk).split(/\r?\n/);
      partial = lines.pop() ?? '';
      for (const l of lines) take(l);
      if (Date.now() - lastCheck > 2000) {
        lastCheck = Date.now();
        const err = await full();
        fullSince = err ? fullSince || Date.now() : 0;
        if (err && Date.now() - fullSince > FULL_GRACE_MS) throw err;
      }
    }
    const timedOut = deadline.aborted && vmmAlive(vmmOf(vm));
    if (partial && running) tail.push(partial);
    // Cancelled (SIGINT/SIGTERM): the VM's owner stopped it; that is not the step's failure.
    throwIfCancelled();
    const diskFull = await full();
    if (diskFull) throw diskFull;
    if (timedOut) throw new UserError(`${label} did not finish within ${Math.round(b.stepTimeoutMs / 1000)} s: raise --step-timeout or fix the step${tail.length ? `; last output: ${tail.slice(-3).join(' | ')}` : ''}`, where);
    if (exitCode === undefined) throw new UserError(`${label}: the build VM stopped without reporting an exit code (console: ${tail.slice(-3).join(' | ') || 'empty'})`, where);
    if (exitCode !== 0) {
      const full = tail.join('\n');
      const hint = failureHint(full, network);
      throw new UserError(`${label} failed with exit code ${exitCode}${hint}: ${tail.slice(-5).join(' | ') || 'no output'}`, where);
    }
    // Firecracker's jail holds the disk as a hard link, or as a copy where the jail is on another file system: take the copy back.
    if (vm.jailDir) await takeBackJailed(vm.jailDir, image);
    await prepared.afterVm((i) => (vm.jailDir ? jailedMountDrive(vm.jailDir, i) : undefined));
  } finally {
    await teardown(cache, vm, lockDir, b.log);
    await relays.close();
  }
  await removeGuest(image);
  // The mount points made for the secrets go again (when the RUN left them empty): the image holds what the RUN made.
  await removeMountStubs(image, stubs, b.log);
  await restoreGuestWritten(image, saved, label, where);
  await fsp.rm(scratch, { recursive: true, force: true });
  await new Ext4Tools(b.log).check(image).catch(async (err: Error) => {
    throw (await diskFullError(image, `the build disk of ${label}`, DISK_FULL_HINT, where)) ?? new UserError(`${label}: the image is not clean after the step (e2fsck: ${err.message.split('\n')[0]})`, where);
  });
}

/** What a failed RUN's output says about its cause: a full disk, no network, or apt without package lists. */
export function failureHint(output: string, network: NetworkMode): string {
  if (/No space left on device/i.test(output)) return ' (the build disk is full: grow it with --size)';
  if (/Temporary failure (in name resolution|resolving)|Network is unreachable|No route to host|Could not resolve|Could not connect to|Connection refused|Failed to fetch|EAI_AGAIN|ENOTFOUND/i.test(output)) {
    return network === 'none' ? ' (the build VM has no network: --network none; build with --network user or a CNI network)' : ' (the network is unreachable inside the build VM)';
  }
  if (/Unable to locate package/.test(output)) return ' (apt knows no such package: is apt-get update in the same RUN, and did it reach its mirrors? without network its lists are empty)';
  return '';
}

async function takeBackJailed(jailDir: string, image: string): Promise<void> {
  const jailed = path.join(jailDir, 'root', 'rootfs.ext4');
  const [a, b] = await Promise.all([fsp.stat(jailed).catch(() => undefined), fsp.stat(image)]);
  if (!a) throw new UserError(`the build VM's disk is gone from its jail (${jailed})`);
  if (a.ino !== b.ino || a.dev !== b.dev) await copySparse(jailed, image);
  await fsp.chown(image, 0, 0);
}
