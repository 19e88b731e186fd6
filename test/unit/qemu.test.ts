import { describe, expect, test } from '@jest/globals';
import { qemuArgv, resolveAccel } from '../../src/vmm/qemu.js';

const base = { kernel: '/k/vmlinuz', append: 'console=ttyS0 root=/dev/vda', rootfs: '/run/vm1/rootfs.ext4', memMib: 256, cpus: 1, accel: 'tcg' as const, serialLog: '/run/vm1/serial.log' };

describe('qemu microvm argv', () => {
  test('the minimum: microvm, virtio-mmio root disk, serial to a file, no reboot, panic=-1', () => {
    expect(qemuArgv(base)).toEqual([
      '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=on', '-accel', 'tcg', '-cpu', 'max', '-smp', '1', '-m', '256M',
      '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'file:/run/vm1/serial.log',
      '-kernel', '/k/vmlinuz', '-append', 'console=ttyS0 root=/dev/vda panic=-1 tsc_early_khz=1000000',
      '-drive', 'id=root,file=/run/vm1/rootfs.ext4,format=raw,if=none,cache=unsafe,werror=report,rerror=report', '-device', 'virtio-blk-device,drive=root',
    ]);
  });

  test.each<[string, Partial<Parameters<typeof qemuArgv>[0]>, string[]]>([
    ['kvm uses the host CPU', { accel: 'kvm' }, ['-accel', 'kvm', '-cpu', 'host']],
    ['an initrd', { initrd: '/k/initrd' }, ['-initrd', '/k/initrd']],
    ['a config disk, read-only', { disks: ['/run/vm1/config.img'] }, ['-drive', 'id=disk0,file=/run/vm1/config.img,format=raw,if=none,readonly=on,rerror=report', '-device', 'virtio-blk-device,drive=disk0']],
    ['user networking with port forwards bound to 127.0.0.1', { userNet: { hostfwd: [{ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 18080, guestPort: 8080 }, { proto: 'udp', hostAddr: '127.0.0.1', hostPort: 5353, guestPort: 53 }] } }, ['-netdev', 'user,id=net0,hostfwd=tcp:127.0.0.1:18080-:8080,hostfwd=udp:127.0.0.1:5353-:53', '-device', 'virtio-net-device,netdev=net0']],
    ['a tap device', { tap: { ifname: 'fbtap0', mac: '02:fc:00:00:00:01' } }, ['-netdev', 'tap,id=net0,ifname=fbtap0,script=no,downscript=no', '-device', 'virtio-net-device,netdev=net0,mac=02:fc:00:00:00:01']],
    ['a pid file and QMP socket', { pidFile: '/run/vm1/pid', qmpSocket: '/run/vm1/qmp.sock' }, ['-pidfile', '/run/vm1/pid', '-qmp', 'unix:/run/vm1/qmp.sock,server=on,wait=off']],
    ['commas in paths are escaped', { rootfs: '/a,b/rootfs.ext4' }, ['-drive', 'id=root,file=/a,,b/rootfs.ext4,format=raw,if=none,cache=unsafe,werror=report,rerror=report']],
    ['an explicit panic= is kept', { append: 'console=ttyS0 panic=5' }, ['-append', 'console=ttyS0 panic=5 tsc_early_khz=1000000']],
    ['KVM needs no TSC hint', { accel: 'kvm' }, ['-append', 'console=ttyS0 root=/dev/vda panic=-1']],
    ['ssh agent channels: virtio-serial ports named for the guest, each a connection to its host socket', { channels: [{ name: 'firebuild.ssh.0', socket: '/run/vm1/channel-0.sock' }, { name: 'firebuild.ssh.1', socket: '/run/vm1/channel-1.sock' }] }, ['-device', 'virtio-serial-device,id=fbser0', '-chardev', 'socket,id=fbch0,path=/run/vm1/channel-0.sock', '-device', 'virtserialport,bus=fbser0.0,chardev=fbch0,name=firebuild.ssh.0', '-chardev', 'socket,id=fbch1,path=/run/vm1/channel-1.sock', '-device', 'virtserialport,bus=fbser0.0,chardev=fbch1,name=firebuild.ssh.1']],
  ])('%s', (_n, extra, wantSub) => {
    expect(containsRun(qemuArgv({ ...base, ...extra }), wantSub)).toBe(true);
  });

  test('every writable drive reports write and read errors to the guest (never pauses it on a full host disk)', () => {
    const argv = qemuArgv({ ...base, disks: ['/run/vm1/config.img'] });
    const drives = argv.filter((_a, i) => argv[i - 1] === '-drive');
    expect(drives).toHaveLength(2);
    for (const d of drives) {
      const opts = d.split(',');
      if (!opts.includes('readonly=on')) expect(opts).toEqual(expect.arrayContaining(['werror=report', 'rerror=report']));
      else expect(opts).toContain('rerror=report');
    }
  });

  test('the run search itself can fail', () => {
    expect(containsRun(qemuArgv(base), ['-accel', 'kvm'])).toBe(false);
  });
});

/** Whether `run` appears in `argv` as consecutive elements. */
function containsRun(argv: string[], run: string[]): boolean {
  return argv.some((_, i) => run.every((r, j) => argv[i + j] === r));
}

describe('accelerator choice', () => {
  const pvm = { usable: false, kind: 'pvm' as const, reason: '/dev/kvm is backed by PVM' };
  const intel = { usable: true, kind: 'intel' as const, reason: 'KVM (Intel VT-x)' };
  test('auto: KVM when usable, else TCG with a warning', async () => {
    expect(await resolveAccel('auto', {}, intel)).toEqual({ accel: 'kvm' });
    const r = await resolveAccel('auto', {}, pvm);
    expect(r.accel).toBe('tcg');
    expect(r.warning).toMatch(/PVM.*TCG/);
  });
  test('FIREBUILD_ACCEL forces the choice of auto', async () => {
    expect(await resolveAccel('auto', { FIREBUILD_ACCEL: 'tcg' }, intel)).toEqual({ accel: 'tcg' });
  });
  test('kvm requested but unusable is a user error; unknown names too', async () => {
    await expect(resolveAccel('kvm', {}, pvm)).rejects.toThrow(/KVM requested but unusable: \/dev\/kvm is backed by PVM/);
    await expect(resolveAccel('hvf', {}, intel)).rejects.toThrow(/unknown accelerator 'hvf'/);
  });
});
