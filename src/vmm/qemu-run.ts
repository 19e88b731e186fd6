import { spawn } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import type { VmmSpec, VmmStarted } from './backend.js';
import { inCgroupArgv } from './in-cgroup.js';
import { qemuArgv } from './qemu.js';

/**
 * Running QEMU (microvm): detached, so the VM's processes are one process group that outlives this
 * process; inside the VM's netns for CNI (the tap lives there); wrapped by the runtime's `wrap` for
 * isolated user-mode networking (a namespace of its own); inside its cgroup always. The console goes to
 * `<dir>/serial.log`, its input is `<dir>/console.sock` (the graceful stop).
 */
export function startQemu(s: VmmSpec): VmmStarted {
  const consoleSock = path.join(s.dir, 'console.sock');
  const serialLog = path.join(s.dir, 'serial.log');
  const argv = qemuArgv({
    kernel: s.kernel,
    ...(s.initrd ? { initrd: s.initrd } : {}),
    // microvm has no PCI bus: pci=off spares kernels built with PCI the probe.
    append: `console=ttyS0 root=/dev/vda rw init=${s.init} quiet pci=off ${s.cmdline}`.trim(),
    rootfs: s.rootfs,
    disks: s.disks,
    ...(s.drives?.length ? { drives: s.drives } : {}),
    memMib: s.memMib,
    cpus: s.cpus,
    accel: s.qemu?.accel ?? 'kvm',
    serialLog,
    consoleSock,
    pidFile: path.join(s.dir, 'qemu.pid'),
    ...(s.channels?.length ? { channels: s.channels.map((c, i) => ({ name: c.name, socket: channelSocket(s.dir, i) })) } : {}),
    ...(s.net.kind === 'user' ? { userNet: { hostfwd: s.net.hostfwd } } : {}),
    ...(s.net.kind === 'tap' ? { tap: { ifname: s.net.name, mac: s.net.mac } } : {}),
  });
  let vmm: [string, string[]] = ['qemu-system-x86_64', argv];
  if (s.net.kind === 'tap' && s.net.netns) vmm = ['ip', ['netns', 'exec', s.net.netns.name, ...vmm.flat()]];
  if (s.wrap) vmm = s.wrap(vmm);
  const child = spawn(...inCgroupArgv(s.cgroup, ...vmm), { detached: true, stdio: ['ignore', 'ignore', 'ignore'] });
  child.unref();
  return { pid: child.pid ?? 0, serialLog, consoleSock };
}

/** Where QEMU's channel `i` (VmmSpec.channels) connects: a socket in the VM's run cache directory. */
export function channelSocket(dir: string, i: number): string {
  return path.join(dir, `channel-${i}.sock`);
}

/** Write a line to QEMU's console socket (the serial port's input); the guest init reads it. */
export function writeConsoleLine(sock: string, line: string, timeoutMs = 2000): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const c = net.connect(sock, () => c.end(`\n${line}\n`, () => resolve()));
    c.on('error', reject);
    c.setTimeout(timeoutMs, () => c.destroy(new Error('console socket timed out')));
  });
}
