import { spawn } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { effectiveCommand, kernelIpArg, mergeEnv, type RunConfig } from '../guest/run-config.js';
import { INIT_PATH, makeConfigDisk, prepareRootfs } from '../guest/prepare.js';
import { RunCache, newVmmId, validateName, vmmOf, type VmState } from '../runtime/state.js';
import { identify, signalVmm, vmmAlive, waitVmmGone } from '../runtime/vmm-process.js';
import type { ImageConfig } from '../store/metadata.js';
import { DEFAULT_KERNEL_ID, type StorageProvider, type StoredKernel } from '../store/provider.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { TAP_PLUGIN, cniAdd, cniDel, loadCniNetwork, tapFromResult, withTapPlugin } from '../net/cni.js';
import { NETNS_DIR, TAP_NAME, addPortForwards, createNetns, linkMac, netnsName, redirectTap, removeNetns, removePortForwards } from '../net/host.js';
import { createVmCgroup, inCgroupArgv, reapCgroup } from '../runtime/cgroup.js';
import { diskFullError, requireFree } from '../util/disk-space.js';
import { NS_ADDR, blockedRoutes, checkIsolatedNet, isolatedArgv, isolatedVmProcesses, netLogReason, prepareIsolatedDir, publishPorts, readHostView } from '../net/isolated-user.js';
import { diskUsage, exists, writeFileAtomic } from '../util/fs.js';
import { startFirecracker, sendCtrlAltDel, type FirecrackerMode } from '../vmm/firecracker-run.js';
import { jailRoot } from '../vmm/firecracker.js';
import { detectKvm } from '../vmm/kvm.js';
import { qemuArgv, resolveAccel, type Accel } from '../vmm/qemu.js';
import { waitForConsole } from '../runtime/console.js';

/** The CNI interface inside the VM's namespace (redirected to the tap the VMM opens). */
export const CNI_IFNAME = 'eth0';

export interface PortSpec { proto: 'tcp' | 'udp'; hostAddr: string; hostPort: number; guestPort: number }

/**
 * `user`: QEMU's user-mode networking inside a namespace of its own (src/net/isolated-user.ts): outbound
 * only, never the host's loopback, addresses or host-only subnets, nor 169.254.0.0/16. `user-host`: QEMU's
 * user-mode networking in the host's namespace (10.0.2.2 is the host's loopback): run VMs only, an explicit
 * opt-in. `none`: no NIC. `cni`: a CNI network.
 */
export type NetworkMode = 'user' | 'user-host' | 'none' | 'cni';
export const NETWORK_MODES = ['user', 'user-host', 'none'] as const;
export type BackendName = 'qemu' | 'firecracker';

export interface RunOptions {
  from: string;
  name?: string;
  vmlinuxId?: string;
  memMib: number;
  cpus: number;
  hostname?: string;
  env: string[];
  envFiles: string[];
  sshUser?: string;
  identityFile?: string;
  network: NetworkMode;
  /** CNI networking (`--cni-network-name`); `ip` is `--ip-address`. */
  cni?: { network: string; confDir: string; binDir: string; ip?: string };
  ports: string[];
  accel: string;
  backend: 'auto' | BackendName;
  /** Firecracker settings (binaries from the profile or flags). */
  firecracker?: { binary?: string; jailer?: string; chrootBase: string; uid: number; gid: number; mode: FirecrackerMode };
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
  build?: { rootfs: string; config: Omit<RunConfig, 'net' | 'dns' | 'halt'>; label: string };
}

export const DEFAULT_LOCK_DIR = '/run/firebuild';

/** User-mode networking: QEMU's slirp gives the guest this address. */
export const USER_NET = { ip: '10.0.2.15/24', gateway: '10.0.2.2', dns: '10.0.2.3' };

/**
 * `[hostip:]hostport:guestport[/tcp|udp]`. Without a host IP: 127.0.0.1 for user networking, every local
 * address (0.0.0.0) for CNI networking.
 */
export function parsePort(s: string, defaultHost = '127.0.0.1'): PortSpec {
  const m = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/.exec(s);
  const ok = (n: string | undefined): boolean => Number(n) >= 1 && Number(n) <= 65535;
  if (!m || !ok(m[2]) || !ok(m[3])) throw new UserError(`malformed --port '${s}': use [hostip:]hostport:guestport[/tcp|udp], e.g. 127.0.0.1:8080:80`);
  return { proto: (m[4] ?? 'tcp') as 'tcp' | 'udp', hostAddr: m[1] ?? defaultHost, hostPort: Number(m[2]), guestPort: Number(m[3]) };
}

export function parseEnvFile(text: string, file: string): string[] {
  const out: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) return;
    const kv = l.replace(/^export\s+/, '');
    if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(kv)) throw new UserError(`${file}:${i + 1}: not KEY=value`);
    out.push(kv);
  });
  return out;
}

const PUBLIC_KEY_RE = /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( .*)?$/;

async function portFree(p: PortSpec): Promise<boolean> {
  if (p.proto === 'udp') return true;
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(p.hostPort, p.hostAddr, () => srv.close(() => resolve(true)));
  });
}

export async function pickKernel(storage: StorageProvider, id: string | undefined): Promise<StoredKernel> {
  if (id) return storage.getKernel(id);
  const ks = (await storage.listKernels()).filter((k) => !k.error);
  // The kernel named `default` (what `kernel build` and the setup action store), else the only one stored.
  const pick = ks.find((k) => k.id === DEFAULT_KERNEL_ID) ?? (ks.length === 1 ? ks[0] : undefined);
  if (pick) return storage.getKernel(pick.id);
  throw new UserError(ks.length === 0
    ? 'no kernel stored: build the fast guest kernel with firebuild kernel build, or import one with firebuild kernel import --id ID FILE [--initrd FILE]'
    : `several kernels stored (${ks.map((k) => k.id).join(', ')}) and none named ${DEFAULT_KERNEL_ID}: choose one with --vmlinux-id`);
}

/** `--cni-bin-dir`, or the first of the usual places that exists. */
export async function cniBinDir(flag?: string): Promise<string> {
  if (flag) return path.resolve(flag);
  for (const d of ['/opt/cni/bin', '/usr/lib/cni']) {
    if (await exists(d)) return d;
  }
  throw new UserError('no CNI plugins found in /opt/cni/bin or /usr/lib/cni: install containernetworking-plugins or set --cni-bin-dir');
}

/** Pick the backend: `auto` is Firecracker when both its binaries are configured, else QEMU. */
export function chooseBackend(o: Pick<RunOptions, 'backend' | 'firecracker'>): BackendName {
  if (o.backend !== 'auto') return o.backend;
  return o.firecracker?.binary && o.firecracker.jailer ? 'firecracker' : 'qemu';
}

/** The guest's run configuration for a stored image: its config, then env files, then --env, then the command after --. */
function runConfigFor(c: ImageConfig, o: RunOptions, hostname: string, net: RunConfig['net'], dns: string[], backend: BackendName, envFromFiles: string[][], flagEnv: string[]): RunConfig {
  return {
    hostname,
    net,
    ...(dns.length ? { dns } : {}),
    env: mergeEnv(c.env, ...envFromFiles, flagEnv),
    command: effectiveCommand(c, o.command),
    user: c.user,
    workdir: c.workingDir,
    stopSignal: c.stopSignal,
    ...(o.sshUser ? { sshUser: o.sshUser } : {}),
    init: o.init ?? 'firebuild',
    halt: backend === 'firecracker' ? 'reboot' : 'poweroff',
  };
}

/**
 * Boot a stored image as a microVM in the background; returns once the init has started the command.
 * The state is written before anything is created on the host, so a failure at any step (or a later
 * `purge`) tears down exactly what exists: cgroup, netns, CNI attachment, iptables rules, jail, run cache.
 */
export async function runVm(o: RunOptions, storage: StorageProvider, cache: RunCache, log: Logger): Promise<VmState> {
  const image = o.build ? undefined : await storage.getImage(o.from);
  const kernel = await pickKernel(storage, o.vmlinuxId);
  const backend = chooseBackend(o);
  const id = newVmmId();
  const name = validateName(o.name ?? id.slice(0, 12));
  if ((await cache.list()).some((v) => v.running && v.name === name)) throw new UserError(`--name ${name} is taken by a running VM: choose another name`);
  const envFromFiles: string[][] = [];
  for (const f of o.envFiles) {
    const text = await fsp.readFile(f, 'utf8').catch(() => {
      throw new UserError(`env file ${f} not found: check the --env-file path`);
    });
    envFromFiles.push(parseEnvFile(text, f));
  }
  const flagEnv = o.env.map((e) => {
    if (e.includes('=')) return e;
    const v = process.env[e];
    if (v === undefined) throw new UserError(`--env ${e} has no value and is not set here: write --env ${e}=value`);
    return `${e}=${v}`;
  });
  let authorizedKeys: string | undefined;
  if (o.identityFile) {
    const text = (await fsp.readFile(o.identityFile, 'utf8').catch(() => {
      throw new UserError(`identity file ${o.identityFile} not found`);
    })).trim();
    if (!text.split('\n').every((l) => PUBLIC_KEY_RE.test(l.trim()))) {
      throw new UserError(`identity file ${o.identityFile} is not an SSH public key: give the .pub file (never the private key)`);
    }
    authorizedKeys = text + '\n';
  }
  if ((o.network === 'user' || o.network === 'user-host') && backend === 'firecracker') throw new UserError(`--network ${o.network} is QEMU only: use --cni-network-name NAME or --network none with Firecracker`);
  if (o.build && o.network === 'user-host') throw new UserError("--network user-host is for run VMs only: build VMs never reach the host's services (use --network user, none or a CNI build network)");
  const isolated = backend === 'qemu' && o.network === 'user';
  if (isolated) await checkIsolatedNet();
  if (o.cni?.ip && o.network !== 'cni') throw new UserError('--ip-address needs --cni-network-name');
  const ports = o.ports.map((p) => parsePort(p, o.network === 'cni' ? '0.0.0.0' : '127.0.0.1'));
  if (ports.length && o.network === 'none') throw new UserError('--port needs --network user or --cni-network-name');
  if (o.network === 'cni' && ports.some((p) => p.hostAddr.startsWith('127.'))) throw new UserError('--port on a loopback address needs --network user: with CNI publish on a host address or leave the host IP out');
  for (const p of ports) if (!(await portFree(p))) throw new UserError(`port ${p.hostAddr}:${p.hostPort} is already in use: choose another host port`);
  const cniNet = o.network === 'cni' && o.cni ? await loadCniNetwork(o.cni.confDir, o.cni.network) : undefined;
  let accel: Accel = 'kvm';
  if (backend === 'qemu') {
    const r = await resolveAccel(o.accel);
    accel = r.accel;
    if (r.warning) log.warn(r.warning);
  } else {
    if (!o.firecracker?.binary || !o.firecracker.jailer) throw new UserError('the Firecracker backend needs --binary-firecracker and --binary-jailer (or a profile that sets them)');
    const v = await detectKvm();
    if (!v.usable) log.warn(`KVM not usable (${v.reason}): Firecracker needs KVM and will likely fail`);
  }

  const dir = await cache.create(id);
  const hostname = o.hostname ?? name;
  const state: VmState = {
    schemaVersion: 1, id, name, image: image?.tag ?? o.build!.label, kernel: kernel.id, backend, accel: backend === 'qemu' ? accel : 'kvm', pid: 0,
    started: new Date().toISOString(), hostname, creator: identify(process.pid),
    network: { mode: o.network, ports },
    serialLog: path.join(dir, 'serial.log'), cacheDir: dir,
  };
  await cache.write(state);
  o.onCreated?.(id);
  const lockDir = o.lockDir ?? DEFAULT_LOCK_DIR;
  try {
    const cg = await createVmCgroup(id);
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
      await requireFree(rootfs, (await diskUsage(image!.rootfsPath)).allocated, `the VM's copy of ${image!.tag}`, RUN_DISK_HINT);
      await prepareRootfs(image!.rootfsPath, rootfs);
      cfg = runConfigFor(image!.metadata.config, o, hostname, netCfg, dns, backend, envFromFiles, flagEnv);
    }
    if (cfg.command.length === 0 && cfg.init !== 'image') throw new UserError(`image ${o.from} has no ENTRYPOINT or CMD: give a command after --`);
    const config = path.join(dir, 'config.ext4');
    await makeConfigDisk(cfg, config, log, authorizedKeys);
    const cmdline = `${ipArg} ${kernel.metadata.cmdline ?? ''}`.trim();

    if (backend === 'qemu') {
      const consoleSock = path.join(dir, 'console.sock');
      const argv = qemuArgv({
        kernel: kernel.vmlinuxPath,
        ...(kernel.initrdPath ? { initrd: kernel.initrdPath } : {}),
        // microvm has no PCI bus: pci=off spares kernels built with PCI the probe.
        append: `console=ttyS0 root=/dev/vda rw init=${INIT_PATH} quiet pci=off ${cmdline}`.trim(),
        rootfs,
        disks: [config],
        memMib: o.memMib,
        cpus: o.cpus,
        accel,
        serialLog: state.serialLog,
        consoleSock,
        pidFile: path.join(dir, 'qemu.pid'),
        // Isolated: QEMU listens in the namespace, slirp4netns publishes the host side (publishPorts).
        ...(o.network === 'user-host' ? { userNet: { hostfwd: ports } } : {}),
        ...(isolated ? { userNet: { hostfwd: ports.map((p) => ({ ...p, hostAddr: NS_ADDR })) } } : {}),
        ...(tap ? { tap: { ifname: tap.name, mac: tap.mac } } : {}),
      });
      // Inside the VM's netns for CNI (the tap lives there), or a namespace of its own for isolated user
      // networking; inside its cgroup always. Detached: the VM's processes are one process group.
      let vmm: [string, string[]] = ['qemu-system-x86_64', argv];
      if (nsName) vmm = ['ip', ['netns', 'exec', nsName, ...vmm.flat()]];
      if (isolated) {
        await prepareIsolatedDir(dir);
        vmm = isolatedArgv({ dir, routes: blockedRoutes(await readHostView()), command: vmm.flat() });
      }
      const child = spawn(...inCgroupArgv(state.cgroup, ...vmm), { detached: true, stdio: ['ignore', 'ignore', 'ignore'] });
      child.unref();
      setVmm(state, child.pid ?? 0);
      state.consoleSock = consoleSock;
      if (isolated) {
        state.network.isolated = true;
        await cache.write(state);
        if (ports.length) await publishPorts(dir, ports, state.pid);
      }
    } else {
      const fc = o.firecracker!;
      // Recorded before the jail exists, so a failed start removes it too.
      state.jailDir = path.dirname(jailRoot(fc.chrootBase, fc.binary!, id));
      await cache.write(state);
      const started = await startFirecracker({
        id, firecracker: fc.binary!, jailer: fc.jailer!, chrootBase: fc.chrootBase, uid: fc.uid, gid: fc.gid, mode: fc.mode,
        kernel: kernel.vmlinuxPath, ...(kernel.initrdPath ? { initrd: kernel.initrdPath } : {}),
        bootArgs: `console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw init=${INIT_PATH} quiet ${cmdline}`.trim(),
        rootfs, disks: [config], memMib: o.memMib, cpus: o.cpus,
        ...(nsName ? { netns: path.join(NETNS_DIR, nsName) } : {}),
        ...(tap ? { tap } : {}),
        ...(state.cgroup ? { cgroup: state.cgroup } : {}),
        metadata: { firebuild: { id, name, image: state.image, hostname } },
      });
      setVmm(state, started.pid);
      Object.assign(state, { jailDir: started.jailDir, apiSock: started.apiSock, serialLog: started.serialLog });
    }
    await cache.write(state);
    log.info('VM starting', { id, name, backend, accel: state.accel, image: state.image });
    try {
      await waitForConsole(state.serialLog, /FIREBUILD-(START|EXIT)/, vmmOf(state), o.bootTimeoutMs);
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

const RUN_DISK_HINT = 'free space there, or point --run-cache at a larger file system';
const BUILD_DISK_HINT = 'free space there, or point TMPDIR at a larger file system (the build works under TMPDIR)';

/** The one-line error when the file system holding the VM's disk is full (checked after a VM failed), else undefined. */
export async function vmDiskFull(s: VmState): Promise<UserError | undefined> {
  return diskFullError(path.join(s.cacheDir, 'rootfs.ext4'), `the disk of VM ${s.name}`, RUN_DISK_HINT);
}

/** Record the VMM's identity (pid, start time, boot id) the moment it exists; the creator's is no longer needed. */
function setVmm(state: VmState, pid: number): void {
  const v = pid ? identify(pid) : { pid: 0, startTime: 'exited', bootId: '' };
  Object.assign(state, { pid: v.pid, pidStartTime: v.startTime, bootId: v.bootId });
  delete state.creator;
}

/** Ask the guest to stop: FIREBUILD-STOP on QEMU's console socket, or SendCtrlAltDel through Firecracker's API. */
async function requestStop(s: VmState): Promise<boolean> {
  try {
    if (s.backend === 'firecracker' && s.apiSock) {
      await sendCtrlAltDel(s.apiSock);
      return true;
    }
    if (s.consoleSock) {
      const sock = s.consoleSock;
      await new Promise<void>((resolve, reject) => {
        const c = net.connect(sock, () => c.end('\nFIREBUILD-STOP\n', () => resolve()));
        c.on('error', reject);
        c.setTimeout(2000, () => c.destroy(new Error('console socket timed out')));
      });
      return true;
    }
  } catch {
    // no channel (the guest or the VMM is wedged): the forced path follows
  }
  return false;
}

/** Remove everything a VM left on the host; each step tolerates what is already gone. */
export async function teardown(cache: RunCache, s: VmState, lockDir: string, log: Logger): Promise<void> {
  if (s.cgroup) await reapCgroup(s.cgroup);
  // Only the recorded VMM (pid, start time, boot id), never whatever process holds its pid now.
  if (signalVmm(vmmOf(s), 'SIGKILL', { group: s.network.isolated === true })) await waitVmmGone(vmmOf(s), 5000);
  // An isolated VM whose wrapper died alone (SIGKILL, no cgroup): its QEMU and slirp4netns, found by their
  // process group and the run cache path on their command line.
  if (s.network.isolated && s.pid) {
    for (const p of await isolatedVmProcesses(s.pid, s.cacheDir)) {
      const who = identify(p);
      if (signalVmm(who, 'SIGKILL')) await waitVmmGone(who, 5000);
    }
  }
  const problems: string[] = [];
  const cni = s.network.cni;
  if (cni) {
    if (s.network.ports.length) await removePortForwards(lockDir, s.id).catch((e: Error) => problems.push(e.message));
    const result = await fsp.readFile(path.join(s.cacheDir, 'cni-result.json'), 'utf8').then((t) => JSON.parse(t) as unknown).catch(() => undefined);
    try {
      const { net } = await withTapPlugin(await loadCniNetwork(cni.confDir, cni.network), cni.binDir);
      await cniDel(net, cni.binDir, { containerId: s.id, netns: path.join(NETNS_DIR, cni.netns), ifname: cni.ifname }, result);
    } catch (e) {
      problems.push((e as Error).message);
    }
    await removeNetns(cni.netns).catch((e: Error) => problems.push(e.message));
  }
  if (s.jailDir) await fsp.rm(s.jailDir, { recursive: true, force: true });
  await cache.remove(s.id);
  if (problems.length) log.warn('teardown left something behind', { id: s.id, problems });
}

/** Stop a VM (graceful stop, then forced after the timeout) and remove everything it left. */
export async function killVm(cache: RunCache, id: string, timeoutMs: number, log: Logger, lockDir = DEFAULT_LOCK_DIR): Promise<void> {
  const s = await cache.read(id);
  let stop: 'graceful' | 'forced' | 'already stopped' = 'already stopped';
  const vmm = vmmOf(s);
  if (vmmAlive(vmm)) {
    const asked = await requestStop(s);
    stop = 'graceful';
    if (!asked || !(await waitVmmGone(vmm, timeoutMs))) {
      stop = 'forced';
      log.warn(asked ? 'VM did not stop in time: forcing it' : 'VM has no stop channel: forcing it', { id });
      if (!s.cgroup && signalVmm(vmm, 'SIGTERM', { group: s.network.isolated === true })) await waitVmmGone(vmm, 2000);
    }
  }
  const exit = /FIREBUILD-EXIT code=(\d+)/.exec(await fsp.readFile(s.serialLog, 'utf8').catch(() => ''));
  await teardown(cache, s, lockDir, log);
  log.info('VM removed', { id, name: s.name, stop, ...(exit ? { 'exit-code': Number(exit[1]) } : {}) });
}

/** Remove every VM whose process is gone (crashed, powered off, killed), with all it left on the host. */
export async function purgeVms(cache: RunCache, log: Logger, lockDir = DEFAULT_LOCK_DIR): Promise<string[]> {
  const gone = (await cache.list()).filter((v) => !v.running);
  for (const v of gone) {
    await teardown(cache, v, lockDir, log);
    log.info('purged', { id: v.id, name: v.name });
  }
  return gone.map((v) => v.id);
}

/** `inspect` in the seed's shape: `.NetworkInterfaces[0].StaticConfiguration.IPConfiguration.IP`. */
export function inspectView(s: VmState & { running?: boolean }): Record<string, unknown> {
  return {
    ...s,
    NetworkInterfaces: s.network.ip ? [{ StaticConfiguration: { IPConfiguration: { IP: s.network.ip } } }] : [],
  };
}
