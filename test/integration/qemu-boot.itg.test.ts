import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Ext4Tools } from '../../src/rootfs/ext4.js';
import { MemoryLogger } from '../../src/util/logger.js';
import { qemuArgv, resolveAccel } from '../../src/vmm/qemu.js';
import { tempDir } from '../helpers/cli.js';

/**
 * The QEMU backend's argv boots for real: Debian's cloud kernel and initrd, a root file system made with
 * firebuild's ext4 tools, under the accelerator `auto` picks on this host (TCG where /dev/kvm is PVM).
 */
let work: string;
beforeAll(async () => {
  work = await tempDir();
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

test('qemu -M microvm boots kernel + initrd + ext4 root to init, which prints a marker and powers off', async () => {
  const tree = path.join(work, 'tree');
  fs.mkdirSync(path.join(tree, 'bin'), { recursive: true });
  for (const d of ['dev', 'proc', 'sys', 'run']) fs.mkdirSync(path.join(tree, d));
  fs.copyFileSync('/bin/busybox', path.join(tree, 'bin', 'busybox'));
  fs.chmodSync(path.join(tree, 'bin', 'busybox'), 0o755);
  fs.writeFileSync(path.join(tree, 'init.sh'), '#!/bin/busybox sh\n/bin/busybox echo FIREBUILD-BOOT-OK\n/bin/busybox poweroff -f\n', { mode: 0o755 });
  const rootfs = path.join(work, 'rootfs.ext4');
  await new Ext4Tools(new MemoryLogger()).mkfs({ root: tree, image: rootfs, sizeBytes: 32 << 20 });

  const vmlinuz = fs.readdirSync('/boot').filter((f) => /^vmlinuz-.*cloud/.test(f)).sort().pop();
  if (!vmlinuz) throw new Error('no Debian cloud kernel in /boot: run scripts/install-deps.sh');
  const { accel } = await resolveAccel('auto');
  const serialLog = path.join(work, 'serial.log');
  const argv = qemuArgv({
    kernel: path.join('/boot', vmlinuz),
    initrd: path.join('/boot', vmlinuz.replace('vmlinuz', 'initrd.img')),
    append: 'console=ttyS0 root=/dev/vda rw init=/init.sh',
    rootfs,
    memMib: 256,
    cpus: 1,
    accel,
    serialLog,
    pidFile: path.join(work, 'qemu.pid'),
  });
  const qemu = spawn('qemu-system-x86_64', argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  qemu.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => qemu.kill('SIGKILL'), 120_000);
  const code = await new Promise<number | null>((resolve) => qemu.on('close', resolve));
  clearTimeout(timer);
  const console = fs.readFileSync(serialLog, 'utf8');
  expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
  expect(console).toContain('FIREBUILD-BOOT-OK');
  expect(console).toMatch(/reboot: Power down/);
  // The process is gone: nothing left running.
  expect(() => process.kill(qemu.pid as number, 0)).toThrow();
});
