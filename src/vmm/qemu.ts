import { UserError } from '../util/errors.js';
import { detectKvm, type KvmVerdict } from './kvm.js';

/**
 * The QEMU `microvm` backend's argv: virtio-mmio block and net devices, serial console to a file,
 * `-no-reboot` so a guest reboot ends the process. Built by a pure function from typed options.
 */
export type Accel = 'kvm' | 'tcg';

export interface QemuVm {
  kernel: string;
  initrd?: string;
  /** Kernel command line; `panic=-1` is added so a guest panic ends the VM instead of hanging. */
  append: string;
  rootfs: string;
  /** Extra read-only disks (the run configuration disk). */
  disks?: string[];
  /** More drives after them, read-only or writable (a build step's RUN mounts). */
  drives?: { path: string; readOnly: boolean }[];
  memMib: number;
  cpus: number;
  accel: Accel;
  serialLog: string;
  /**
   * A unix socket on the serial port's input: the console output still goes to `serialLog`, and the
   * host writes `FIREBUILD-STOP` here for a graceful stop (the init turns it into the stop signal).
   */
  consoleSock?: string;
  /** User-mode networking with host ports forwarded to the guest. */
  userNet?: { hostfwd: { proto: 'tcp' | 'udp'; hostAddr: string; hostPort: number; guestPort: number }[] };
  /** A tap device (CNI networking). */
  tap?: { ifname: string; mac: string };
  pidFile?: string;
  qmpSocket?: string;
  /** virtio-serial ports: each named `name` in the guest, its host side a connection to the unix socket `socket`. */
  channels?: { name: string; socket: string }[];
}

/** Every writable drive's error policy (see qemuArgv). */
export const DRIVE_ERRORS = 'werror=report,rerror=report';

export function qemuArgv(vm: QemuVm): string[] {
  const argv = [
    '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=on',
    '-accel', vm.accel,
    '-cpu', vm.accel === 'kvm' ? 'host' : 'max',
    '-smp', String(vm.cpus),
    '-m', `${vm.memMib}M`,
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    ...(vm.consoleSock
      ? ['-chardev', `socket,id=con0,path=${escapeOpt(vm.consoleSock)},server=on,wait=off,logfile=${escapeOpt(vm.serialLog)},logappend=on`, '-serial', 'chardev:con0']
      : ['-serial', `file:${vm.serialLog}`]),
    '-kernel', vm.kernel,
    ...(vm.initrd ? ['-initrd', vm.initrd] : []),
    '-append', appendFor(vm),
    // werror/rerror=report: a host write or read error (ENOSPC on a full host disk) reaches the guest as an
    // I/O error, so its command fails; QEMU's default (enospc) pauses the guest, which then hangs.
    '-drive', `id=root,file=${escapeOpt(vm.rootfs)},format=raw,if=none,cache=unsafe,${DRIVE_ERRORS}`,
    '-device', 'virtio-blk-device,drive=root',
  ];
  (vm.disks ?? []).forEach((d, i) => {
    argv.push('-drive', `id=disk${i},file=${escapeOpt(d)},format=raw,if=none,readonly=on,rerror=report`, '-device', `virtio-blk-device,drive=disk${i}`);
  });
  (vm.drives ?? []).forEach((d, i) => {
    const mode = d.readOnly ? 'readonly=on,rerror=report' : `cache=unsafe,${DRIVE_ERRORS}`;
    argv.push('-drive', `id=mnt${i},file=${escapeOpt(d.path)},format=raw,if=none,${mode}`, '-device', `virtio-blk-device,drive=mnt${i}`);
  });
  if (vm.userNet) {
    const fwd = vm.userNet.hostfwd.map((f) => `,hostfwd=${f.proto}:${f.hostAddr}:${f.hostPort}-:${f.guestPort}`).join('');
    argv.push('-netdev', `user,id=net0${fwd}`, '-device', 'virtio-net-device,netdev=net0');
  } else if (vm.tap) {
    argv.push('-netdev', `tap,id=net0,ifname=${vm.tap.ifname},script=no,downscript=no`, '-device', `virtio-net-device,netdev=net0,mac=${vm.tap.mac}`);
  }
  if (vm.channels?.length) {
    argv.push('-device', 'virtio-serial-device,id=fbser0');
    vm.channels.forEach((c, i) => {
      argv.push('-chardev', `socket,id=fbch${i},path=${escapeOpt(c.socket)}`, '-device', `virtserialport,bus=fbser0.0,chardev=fbch${i},name=${escapeOpt(c.name)}`);
    });
  }
  if (vm.pidFile) argv.push('-pidfile', vm.pidFile);
  if (vm.qmpSocket) argv.push('-qmp', `unix:${vm.qmpSocket},server=on,wait=off`);
  return argv;
}

/**
 * The kernel command line: `panic=-1` unless set, and under TCG `tsc_early_khz`, because microvm has no
 * HPET or PM timer and TSC calibration against the PIT fails now and then under software emulation on a
 * busy host, after which the guest hangs before printing anything (measured here: 1 boot in 10 hung
 * without it, 0 in 12 with it).
 */
function appendFor(vm: QemuVm): string {
  let a = vm.append;
  if (!/\bpanic=/.test(a)) a += ' panic=-1';
  if (vm.accel === 'tcg' && !/\btsc_early_khz=/.test(a)) a += ' tsc_early_khz=1000000';
  return a;
}

/** QEMU option values escape commas by doubling them. */
function escapeOpt(v: string): string {
  return v.replace(/,/g, ',,');
}

/**
 * `--accel auto|kvm|tcg` (FIREBUILD_ACCEL overrides auto): auto uses KVM only when it is usable for
 * standard kernels (not PVM-backed), else TCG with a warning; kvm when unusable is a user error.
 */
export async function resolveAccel(requested: string, env: NodeJS.ProcessEnv = process.env, verdict?: KvmVerdict): Promise<{ accel: Accel; warning?: string }> {
  const want = requested === 'auto' && env.FIREBUILD_ACCEL ? env.FIREBUILD_ACCEL : requested;
  if (want !== 'auto' && want !== 'kvm' && want !== 'tcg') throw new UserError(`unknown accelerator '${want}': use auto, kvm or tcg`);
  if (want === 'tcg') return { accel: 'tcg' };
  const v = verdict ?? (await detectKvm());
  if (v.usable) return { accel: 'kvm' };
  if (want === 'kvm') throw new UserError(`KVM requested but unusable: ${v.reason}`);
  return { accel: 'tcg', warning: `KVM not usable (${v.reason}); booting with TCG (software emulation, slower)` };
}
