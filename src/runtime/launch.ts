import * as net from 'node:net';
import * as path from 'node:path';
import { effectiveCommand, kernelIpArg, mergeEnv, type RunConfig } from '../guest/run-config.js';
import { INIT_PATH, makeConfigDisk, prepareRootfs } from '../guest/prepare.js';
import { TAP_PLUGIN, cniAdd, loadCniNetwork, tapFromResult, withTapPlugin } from '../net/cni.js';
import { NETNS_DIR, TAP_NAME, addPortForwards, createNetns, linkMac, netnsName, redirectTap } from '../net/host.js';
import { NS_ADDR, blockedRoutes, checkIsolatedNet, isolatedArgv, netLogReason, prepareIsolatedDir, publishPorts, readHostView } from '../net/isolated-user.js';
import { CNI_IFNAME, DEFAULT_LOCK_DIR, USER_NET, pickHostPorts, type NetworkMode, type PortRange, type PortSpec } from '../net/network.js';
import type { ImageConfig } from '../store/metadata.js';
import { ACTING_MAX_BYTES, type StorageProvider, type StoredImage, type StoredKernel } from '../store/provider.js';
import { diskFullError, requireFree } from '../util/disk-space.js';
import { throwIfCancelled } from '../util/cleanup.js';
import { UserError } from '../util/errors.js';
import { diskUsage, writeFileAtomic } from '../util/fs.js';
import type { Logger } from '../util/logger.js';
import { requireRootAccess } from '../util/privilege.js';
import { copyChecked, openChecked, openDirChecked, type CheckedFile } from '../util/safe-open.js';
import { backendFor, chooseBackend, type BackendChoice, type BackendName, type FirecrackerSettings, type GuestChannel } from '../vmm/backend.js';
import { jailRoot } from '../vmm/firecracker.js';
import { detectKvm } from '../vmm/kvm.js';
import { resolveAccel, type Accel } from '../vmm/qemu.js';
import { createVmCgroup } from './cgroup.js';
import { waitForStart } from './console.js';
import { pickKernel } from './kernel.js';
import { ownVm } from './owner.js';
import { newVmmId, validateName, vmmOf, type RunCache, type VmState } from './state.js';
import { RUN_DISK_HINT, teardown, vmDiskFull } from './stop.js';
import { identify } from './vmm-process.js';

/** What a VM is launched from: every value already parsed and checked at the edge (flags, inputs). */
export interface LaunchSpec {
  from: string;
  name?: string;
  vmlinuxId?: string;
  memMib: number;
  cpus: number;
  hostname?: string;
  /** KEY=value entries over the image's ENV, later entries winning (env files, then --env). */
  env: string[];
  sshUser?: string;
  /** The authorized_keys text for `sshUser` (checked public keys). */
  authorizedKeys?: string;
  network: NetworkMode;
  /** CNI networking (`--cni-network-name`); `ip` is `--ip-address`. */
  cni?: { network: string; confDir: string; binDir: string; ip?: string };
  ports: PortSpec[];
  /** Host ports this VM may publish (a runner instance's, FIREBUILD_PORT_RANGE): auto ports are picked in it, fixed ones must lie in it. */
  portRange?: PortRange;
  accel: string;
  backend: BackendChoice;
  firecracker?: FirecrackerSettings;
  init?: 'firebuild' | 'image';
  command?: string[];
  bootTimeoutMs: number;
  /** Where host-wide locks live (iptables changes). */
  lockDir?: string;
  /** Called once the VM's id exists on the host, before anything is started (the smoke-test action saves it for its post step). */
  onCreated?: (id: string) => void;
  /**
   * A build step of the vm engine: boot `rootfs` itself (the build's image, already holding the init),
   * not a copy of a stored image, with this command, environment, USER and WORKDIR; `label` names it in
   * `ls`. The network and the halt come from the run's own settings.
   */
  build?: { rootfs: string; config: Omit<RunConfig, 'net' | 'dns' | 'halt'>; label: string; channels?: readonly GuestChannel[]; drives?: { path: string; readOnly: boolean }[] };
}

/** How long a cancel waits for a launch in flight to stop at its next step before tearing the VM down anyway. */
const CANCEL_WAIT_MS = 5000;
const BUILD_DISK_HINT = 'free space there, or point TMPDIR at a larger file system (the build works under TMPDIR)';

async function portFree(p: PortSpec): Promise<boolean> {
  if (p.proto === 'udp') return true;
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(p.hostPort, p.hostAddr, () => srv.close(() => resolve(true)));
  });
}

/** The guest's run configuration for a stored image: its config, then the spec's env, then the command after --. */
function runConfigFor(c: ImageConfig, o: LaunchSpec, hostname: string, net: RunConfig['net'], dns: string[], backend: BackendName): RunConfig {
  return {
    hostname,
    net,
    ...(dns.length ? { dns } : {}),
    env: mergeEnv(c.env, o.env),
    command: effectiveCommand(c, o.command),
    user: c.user,
    workdir: c.workingDir,
    stopSignal: c.stopSignal,
    ...(o.sshUser ? { sshUser: o.sshUser } : {}),
    init: o.init ?? 'firebuild',
    halt: backend === 'firecracker' ? 'reboot' : 'poweroff',
  };
}

/** Record the VMM's identity (pid, start time, boot id) the moment it exists; the creator's is no longer needed. */
function setVmm(state: VmState, pid: number): void {
  const v = pid ? identify(pid) : { pid: 0, startTime: 'exited', bootId: '' };
  Object.assign(state, { pid: v.pid, pidStartTime: v.startTime, bootId: v.bootId });
  delete state.creator;
}

/** The store's files a VM is made from, opened and checked once (root reading another user's store). */
interface StoreFiles {
  uid: number;
  rootfs?: CheckedFile;
  kernel: CheckedFile;
  initrd?: CheckedFile;
  close(): Promise<void>;
}

/**
 * Open the image's rootfs and the kernel (and initrd) of a store root reads for `uid`: no symlink, FIFO,
 * hard link, file of a third user or oversized file (util/safe-open.ts). Everything the VM gets from the
 * store is then copied through these descriptors; a refusal comes before anything exists on the host.
 */
async function openStoreFiles(uid: number, image: StoredImage | undefined, kernel: StoredKernel): Promise<StoreFiles> {
  const opened: CheckedFile[] = [];
  const close = async (): Promise<void> => {
    for (const f of opened.splice(0)) await f.close().catch(() => undefined);
  };
  const open = async (file: string, what: string, maxBytes: number): Promise<CheckedFile> => {
    const f = await openChecked(file, { what, trust: { uid }, maxBytes });
    opened.push(f);
    return f;
  };
  try {
    return {
      uid,
      ...(image ? { rootfs: await open(image.rootfsPath, `the rootfs of image ${image.tag}`, ACTING_MAX_BYTES.rootfs) } : {}),
      kernel: await open(kernel.vmlinuxPath, `the vmlinux of kernel ${kernel.id}`, ACTING_MAX_BYTES.kernel),
      ...(kernel.initrdPath ? { initrd: await open(kernel.initrdPath, `the initrd of kernel ${kernel.id}`, ACTING_MAX_BYTES.kernel) } : {}),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * Boot a stored image (or a build step's disk) as a microVM in the background; returns once the init has
 * started the command. The state is written before anything is created on the host, so a failure at any
 * step (or a later `purge`) tears down exactly what exists: cgroup, netns, CNI attachment, iptables rules,
 * jail, run cache.
 */
export async function launchVm(o: LaunchSpec, storage: StorageProvider, cache: RunCache, log: Logger): Promise<VmState> {
  const image = o.build ? undefined : await storage.getImage(o.from);
  const kernel = await pickKernel(storage, o.vmlinuxId);
  const files = storage.actingUid === undefined ? undefined : await openStoreFiles(storage.actingUid, image, kernel);
  try {
    return await launchFrom(o, image, kernel, files, cache, log);
  } finally {
    await files?.close();
  }
}

async function launchFrom(o: LaunchSpec, image: StoredImage | undefined, kernel: StoredKernel, files: StoreFiles | undefined, cache: RunCache, log: Logger): Promise<VmState> {
  const backend = chooseBackend(o);
  // The root-only parts, refused in one line before anything exists on the host.
  if (backend === 'firecracker') await requireRootAccess('the Firecracker backend (its jailer)', 'boot with the qemu backend');
  if (o.network === 'cni') await requireRootAccess('a CNI network (network namespaces, taps, iptables)', 'use user-mode networking (network user)');
  const id = newVmmId();
  const name = validateName(o.name ?? id.slice(0, 12));
  if ((await cache.list()).some((v) => v.running && v.name === name)) throw new UserError(`--name ${name} is taken by a running VM: choose another name`);
  if ((o.network === 'user' || o.network === 'user-host') && backend === 'firecracker') throw new UserError(`--network ${o.network} is QEMU only: use --cni-network-name NAME or --network none with Firecracker`);
  if (o.build && o.network === 'user-host') throw new UserError("--network user-host is for run VMs only: build VMs never reach the host's services (use --network user, none or a CNI build network)");
  const isolated = backend === 'qemu' && o.network === 'user';
  if (isolated) await checkIsolatedNet();
  if (o.cni?.ip && o.network !== 'cni') throw new UserError('--ip-address needs --cni-network-name');
  if (o.ports.length && o.network === 'none') throw new UserError('--port needs --network user or --cni-network-name');
  if (o.network === 'cni' && o.ports.some((p) => p.hostAddr.startsWith('127.'))) throw new UserError('--port on a loopback address needs --network user: with CNI publish on a host address or leave the host IP out');
  // Auto host ports (0) get a free port each; the chosen mapping is in the VM's state (`ls`, the smoke-test's `ports` output).
  const ports = await pickHostPorts(o.ports, o.portRange);
  for (const p of ports) if (!(await portFree(p))) throw new UserError(`port ${p.hostAddr}:${p.hostPort} is already in use: choose another host port`);
  const cniNet = o.network === 'cni' && o.cni ? await loadCniNetwork(o.cni.confDir, o.cni.network) : undefined;
  let accel: Accel = 'kvm';
  if (backend === 'qemu') {
    const r = await resolveAccel(o.accel);
    accel = r.accel;
    if (r.warning) log.warn(r.warning);
  } else {
    if (!o.firecracker?.binary || !o.firecracker.jailer) throw new UserError('the Firecracker backend needs --binary-firecracker and --binary-jailer (or a profile that sets them)');
    // Root places the store's files in the jail: for another user, only in a tree that user cannot touch.
    if (files) await (await openDirChecked(o.firecracker.chrootBase, 'chroot-base', { uid: files.uid, rootOnly: true })).close();
    const v = await detectKvm();
    if (!v.usable) log.warn(`KVM not usable (${v.reason}): Firecracker needs KVM and will likely fail`);
  }

  const dir = cache.dir(id);
  const hostname = o.hostname ?? name;
  const state: VmState = {
    schemaVersion: 1, id, name, image: image?.tag ?? o.build!.label, kernel: kernel.id, backend, accel: backend === 'qemu' ? accel : 'kvm', pid: 0,
    started: new Date().toISOString(), hostname, creator: identify(process.pid), ...(o.build ? { boundTo: identify(process.pid) } : {}),
    network: { mode: o.network, ports },
    serialLog: path.join(dir, 'serial.log'), cacheDir: dir,
  };
  const lockDir = o.lockDir ?? DEFAULT_LOCK_DIR;
  // Owned from here (its state exists): a SIGINT/SIGTERM of this process tears it down. The cleanup lets a
  // launch in flight stop at its next step first (each step checks for the cancel and tears down what it
  // made), so it never races the launch creating more; a launch stuck longer is torn down anyway.
  const launch: { inFlight?: Promise<VmState> } = {};
  ownVm(id, `VM ${name} (${id})`, async () => {
    if (launch.inFlight) await Promise.race([launch.inFlight.catch(() => undefined), new Promise((r) => setTimeout(r, CANCEL_WAIT_MS))]);
    await teardown(cache, state, lockDir, log);
  });
  launch.inFlight = boot();
  return launch.inFlight;

  async function boot(): Promise<VmState> {
    try {
      await cache.create(state);
      o.onCreated?.(id);
      throwIfCancelled();
      const cg = await createVmCgroup(id, cache.cgroupParent);
      if (cg) state.cgroup = cg;
      else log.debug('no writable cgroup v2 here: the VM runs without its own cgroup');
      await cache.write(state);

      let netCfg: RunConfig['net'] = { mode: 'none' };
      let dns: string[] = [];
      let tap: { name: string; mac: string } | undefined;
      let nsName: string | undefined;
      if (o.network === 'user' || o.network === 'user-host') {
        netCfg = { mode: 'static', ip: USER_NET.ip, gateway: USER_NET.gateway };
        dns = [USER_NET.dns];
        state.network.ip = USER_NET.ip.split('/')[0] as string;
      } else if (cniNet && o.cni) {
        throwIfCancelled();
        nsName = netnsName(id);
        state.network.cni = { network: cniNet.name, confDir: o.cni.confDir, binDir: o.cni.binDir, netns: nsName, ifname: CNI_IFNAME };
        await cache.write(state);
        const nsPath = await createNetns(nsName);
        const chain = await withTapPlugin(cniNet, o.cni.binDir);
        const result = await cniAdd(chain.net, o.cni.binDir, { containerId: id, netns: nsPath, ifname: CNI_IFNAME, ...(o.cni.ip ? { ip: o.cni.ip } : {}) });
        await writeFileAtomic(path.join(dir, 'cni-result.json'), JSON.stringify(result) + '\n', 0o600);
        const ipc = result.ips![0]!;
        if (chain.tapPlugin) {
          const t = tapFromResult(result, nsPath, CNI_IFNAME);
          if (!t) throw new UserError(`${TAP_PLUGIN} reported no tap in the VM's network namespace: check the plugin's version`);
          tap = { name: t.tap, mac: t.mac ?? (await linkMac(nsName, CNI_IFNAME)) };
        } else {
          const { mac } = await redirectTap(nsName, CNI_IFNAME, TAP_NAME);
          tap = { name: TAP_NAME, mac };
        }
        const mac = tap.mac;
        state.network.cni.mac = mac;
        state.network.ip = ipc.address.split('/')[0] as string;
        netCfg = { mode: 'static', ip: ipc.address, ...(ipc.gateway ? { gateway: ipc.gateway } : {}) };
        dns = result.dns?.nameservers ?? [];
        await cache.write(state);
        await addPortForwards(lockDir, id, ports.map((p) => ({ ...p, guestIp: state.network.ip as string })));
      }

      // Without an initrd the kernel configures a static address itself (ip=, CONFIG_IP_PNP): faster boots.
      let ipArg = '';
      if (netCfg.mode === 'static' && !kernel.initrdPath) {
        ipArg = kernelIpArg(netCfg.ip, netCfg.gateway);
        netCfg = { ...netCfg, mode: 'kernel' };
      }
      let rootfs = path.join(dir, 'rootfs.ext4');
      let cfg: RunConfig;
      if (o.build) {
        rootfs = o.build.rootfs;
        cfg = { ...o.build.config, net: netCfg, ...(dns.length ? { dns } : {}), halt: backend === 'firecracker' ? 'reboot' : 'poweroff' };
      } else {
        const allocated = files?.rootfs ? files.rootfs.allocated : (await diskUsage(image!.rootfsPath)).allocated;
        await requireFree(rootfs, allocated, `the VM's copy of ${image!.tag}`, RUN_DISK_HINT);
        await prepareRootfs(files?.rootfs ?? image!.rootfsPath, rootfs);
        throwIfCancelled();
        cfg = runConfigFor(image!.metadata.config, o, hostname, netCfg, dns, backend);
      }
      if (cfg.command.length === 0 && cfg.init !== 'image') throw new UserError(`image ${o.from} has no ENTRYPOINT or CMD: give a command after --`);
      const config = path.join(dir, 'config.ext4');
      await makeConfigDisk(cfg, config, log, o.authorizedKeys);
      const cmdline = `${ipArg} ${kernel.metadata.cmdline ?? ''}`.trim();
      // Another user's store: the VMM (and the jail) get root's own copies, made through the checked descriptors.
      let vmlinux = kernel.vmlinuxPath;
      let initrd = kernel.initrdPath;
      if (files) {
        vmlinux = path.join(dir, 'vmlinux');
        await copyChecked(files.kernel, vmlinux);
        if (files.initrd) {
          initrd = path.join(dir, 'initrd');
          await copyChecked(files.initrd, initrd);
        }
      }

      if (backend === 'firecracker') {
        // Recorded before the jail exists, so a failed start removes it too.
        state.jailDir = path.dirname(jailRoot(o.firecracker!.chrootBase, o.firecracker!.binary!, id));
        await cache.write(state);
      }
      throwIfCancelled();
      if (isolated) await prepareIsolatedDir(dir);
      const routes = isolated ? blockedRoutes(await readHostView()) : [];
      throwIfCancelled();
      // The boot time counts from here (the VMM's launch) to the init's start line on the console.
      const vmmStartedAt = Date.now();
      const started = await backendFor(backend).start({
        id, dir, kernel: vmlinux, ...(initrd ? { initrd } : {}), init: INIT_PATH, cmdline,
        rootfs, disks: [config], ...(o.build?.drives?.length ? { drives: o.build.drives } : {}), memMib: o.memMib, cpus: o.cpus,
        ...(state.cgroup ? { cgroup: state.cgroup } : {}),
        // Isolated: QEMU listens in the namespace, slirp4netns publishes the host side (publishPorts).
        net: o.network === 'user-host' ? { kind: 'user', hostfwd: ports }
          : isolated ? { kind: 'user', hostfwd: ports.map((p) => ({ ...p, hostAddr: NS_ADDR })) }
            : tap ? { kind: 'tap', name: tap.name, mac: tap.mac, ...(nsName ? { netns: { name: nsName, path: path.join(NETNS_DIR, nsName) } } : {}) }
              : { kind: 'none' },
        ...(isolated ? { wrap: (vmm: [string, string[]]) => isolatedArgv({ dir, routes, command: vmm.flat() }) } : {}),
        qemu: { accel },
        ...(o.firecracker ? { firecracker: o.firecracker } : {}),
        metadata: { firebuild: { id, name, image: state.image, hostname } },
        // A build step's channels (its ssh agents): the backend has their services listen before the guest runs.
        ...(o.build?.channels?.length ? { channels: o.build.channels } : {}),
      });
      setVmm(state, started.pid);
      Object.assign(state, {
        serialLog: started.serialLog,
        ...(started.consoleSock ? { consoleSock: started.consoleSock } : {}),
        ...(started.apiSock ? { apiSock: started.apiSock } : {}),
        ...(started.jailDir ? { jailDir: started.jailDir } : {}),
      });
      if (isolated) {
        state.network.isolated = true;
        await cache.write(state);
        if (ports.length) await publishPorts(dir, ports, state.pid);
      }
      await cache.write(state);
      log.info('VM starting', { id, name, backend, accel: state.accel, image: state.image });
      try {
        await waitForStart(state.serialLog, vmmOf(state), o.bootTimeoutMs);
        state.bootTimes = { vmmStartedAt, initStartedAt: Date.now() };
        await cache.write(state);
      } catch (err) {
        const why = isolated && err instanceof UserError ? await netLogReason(dir) : undefined;
        throw why ? new UserError(`${(err as Error).message} (isolated network: ${why})`) : err;
      }
      return state;
    } catch (err) {
      // A VM that could not start on a full disk: say so rather than what failed next.
      const full = o.build ? await diskFullError(o.build.rootfs, `the build disk of ${o.build.label}`, BUILD_DISK_HINT) : await vmDiskFull(state);
      await teardown(cache, state, lockDir, log);
      throw full ?? err;
    }
  }
}
