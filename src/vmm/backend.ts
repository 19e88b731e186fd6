import type { Accel } from './qemu.js';
import type { FirecrackerMode } from './firecracker-run.js';
import { startFirecracker, sendCtrlAltDel } from './firecracker-run.js';
import { channelSocket, startQemu, writeConsoleLine } from './qemu-run.js';
import type { BackendChoice, BackendName } from './backends.js';

export { BACKENDS, BACKEND_CHOICES, type BackendChoice, type BackendName } from './backends.js';

/**
 * One interface for the VMMs: start a VM from a typed spec, ask it to stop. The runtime (runtime/launch.ts)
 * owns everything around it (state record, cgroup, network attach, config disk, the wait for the init,
 * teardown); a backend only starts its process and knows its stop channel.
 */

/** Firecracker's settings (binaries from the profile or flags). */
export interface FirecrackerSettings { binary?: string; jailer?: string; chrootBase: string; uid: number; gid: number; mode: FirecrackerMode }

export interface VmmSpec {
  /** The VM's id (the jail's name, the cgroup's). */
  id: string;
  /** The VM's run cache directory: QEMU's serial log, console socket and pid file go there. */
  dir: string;
  kernel: string;
  initrd?: string;
  /** The guest init's path (the kernel's init=). */
  init: string;
  /** More kernel command line (ip=, the kernel's stored cmdline); each backend adds its own console and root. */
  cmdline: string;
  rootfs: string;
  /** Extra read-only disks (the run configuration disk). */
  disks: string[];
  /** More drives after them (a build step's RUN mounts: /dev/vdc, vdd, ... in this order). */
  drives?: { path: string; readOnly: boolean }[];
  memMib: number;
  cpus: number;
  /** The VM's cgroup (made by the runtime): the VMM starts inside it. */
  cgroup?: string;
  /** `user`: QEMU's user-mode networking with these forwards; `tap`: a tap in a netns (CNI). */
  net: { kind: 'none' } | { kind: 'user'; hostfwd: { proto: 'tcp' | 'udp'; hostAddr: string; hostPort: number; guestPort: number }[] } | { kind: 'tap'; name: string; mac: string; netns?: { name: string; path: string } };
  /** QEMU: wraps the VMM's argv (the isolated user-mode network's namespace, net/isolated-user.ts). */
  wrap?: (argv: [string, string[]]) => [string, string[]];
  qemu?: { accel: Accel };
  firecracker?: FirecrackerSettings;
  /** Firecracker: MMDS metadata. */
  metadata?: Record<string, unknown>;
  /** Byte channels between host services and the guest (a build's ssh agents, engine/vm/ssh-relay.ts). */
  channels?: readonly GuestChannel[];
}

/**
 * A byte channel between a service on the host and the guest: on QEMU a virtio-serial port named `name`
 * (`-chardev socket` connecting to the service's socket), on Firecracker the guest's vsock connections to
 * the host (CID 2) on port `vsockPort` (Firecracker connects to `<uds_path>_<port>`). The service listens
 * on the unix socket the backend names (`listen`, before the VMM needs it; `owner`: the jail's user, who
 * must be able to connect) and is owned by whoever made it; the socket file lies in the VM's run cache
 * directory or its jail, removed with them.
 */
export interface GuestChannel {
  readonly name: string;
  readonly vsockPort: number;
  listen(socketPath: string, owner?: { uid: number; gid: number }): Promise<void>;
}

export interface VmmStarted {
  /** The VMM's host pid (QEMU, or Firecracker; for a wrapped QEMU, the wrapper leading its process group). */
  pid: number;
  serialLog: string;
  /** QEMU: the console input socket (the graceful stop). */
  consoleSock?: string;
  /** Firecracker: the API socket and the jail directory. */
  apiSock?: string;
  jailDir?: string;
}

export interface VmmBackend {
  readonly name: BackendName;
  start(spec: VmmSpec): Promise<VmmStarted>;
  /**
   * Ask the guest to stop: `stopLine` on QEMU's console (the guest init's stop line), Ctrl+Alt+Del through
   * Firecracker's API. False when there is no channel (the forced path follows).
   */
  requestStop(vm: { consoleSock?: string | undefined; apiSock?: string | undefined }, stopLine: string): Promise<boolean>;
}

const qemu: VmmBackend = {
  name: 'qemu',
  start: async (s) => {
    // QEMU connects to each channel's socket as it starts: the service listens first.
    for (const [i, ch] of (s.channels ?? []).entries()) await ch.listen(channelSocket(s.dir, i));
    return startQemu(s);
  },
  requestStop: async (vm, stopLine) => {
    if (!vm.consoleSock) return false;
    await writeConsoleLine(vm.consoleSock, stopLine);
    return true;
  },
};

const firecracker: VmmBackend = {
  name: 'firecracker',
  start: async (s) => {
    const fc = s.firecracker;
    if (!fc?.binary || !fc.jailer) throw new Error('the Firecracker backend needs its binary and jailer');
    return startFirecracker({
      id: s.id, firecracker: fc.binary, jailer: fc.jailer, chrootBase: fc.chrootBase, uid: fc.uid, gid: fc.gid, mode: fc.mode,
      kernel: s.kernel, ...(s.initrd ? { initrd: s.initrd } : {}),
      bootArgs: `console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw init=${s.init} quiet ${s.cmdline}`.trim(),
      rootfs: s.rootfs, disks: s.disks, ...(s.drives?.length ? { drives: s.drives } : {}), memMib: s.memMib, cpus: s.cpus,
      ...(s.net.kind === 'tap' ? { tap: { name: s.net.name, mac: s.net.mac }, ...(s.net.netns ? { netns: s.net.netns.path } : {}) } : {}),
      ...(s.cgroup ? { cgroup: s.cgroup } : {}),
      ...(s.metadata ? { metadata: s.metadata } : {}),
      ...(s.channels?.length ? { channels: s.channels } : {}),
    });
  },
  requestStop: async (vm) => {
    if (!vm.apiSock) return false;
    await sendCtrlAltDel(vm.apiSock);
    return true;
  },
};

export function backendFor(name: BackendName): VmmBackend {
  return name === 'firecracker' ? firecracker : qemu;
}

/**
 * Pick the backend: `auto` is Firecracker when both its binaries are configured and the jailer can run
 * (`jailerUsable`: root, or the privileged helper; util/privilege.ts), else QEMU.
 */
export function chooseBackend(o: { backend: BackendChoice; firecracker?: FirecrackerSettings | undefined; jailerUsable?: boolean }): BackendName {
  if (o.backend !== 'auto') return o.backend;
  return o.firecracker?.binary && o.firecracker.jailer && o.jailerUsable !== false ? 'firecracker' : 'qemu';
}
