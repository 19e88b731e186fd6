#!/usr/bin/env node
// bench/boot: time from VMM start to the init's first line and to a probed port open, for the QEMU
// backend, against the floor measured in the same run: the same kernel (and initrd) booting `init=` a
// static program that prints a line and powers off at once. Two kernels: Debian's cloud kernel + initrd
// (256 MiB guest: its initrd cannot unpack in 128 MiB) and, when stored, a vmlinux made by `firebuild
// kernel build` (no initrd, 128 MiB guest). Also the VMM's own memory (QEMU's peak RSS). Prints JSON.
// Needs root, `npm run build`, a stored examples/hello:1 (scripts/quickstart.sh makes it), the
// debian-cloud kernel, and for the second kernel `firebuild kernel build --id fc61`.
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { INIT_PATH, makeConfigDisk, prepareRootfs } from '../lib/guest/prepare.js';
import { effectiveCommand, kernelIpArg, mergeEnv } from '../lib/guest/run-config.js';
import { Ext4Tools } from '../lib/rootfs/ext4.js';
import { openStorage, resolveSettings } from '../lib/profile/settings.js';
import { MemoryLogger } from '../lib/util/logger.js';
import { qemuArgv, resolveAccel } from '../lib/vmm/qemu.js';

const runs = Number(process.env.BENCH_RUNS ?? 5);
const log = new MemoryLogger();
const storage = openStorage(resolveSettings({}, undefined));
const image = await storage.getImage(process.env.BENCH_IMAGE ?? 'examples/hello:1');
const kernels = [{ kernel: await storage.getKernel(process.env.BENCH_KERNEL ?? 'debian-cloud'), guestMib: 256 }];
const builtId = process.env.BENCH_BUILT_KERNEL ?? 'fc61';
if ((await storage.listKernels()).some((k) => k.id === builtId)) kernels.push({ kernel: await storage.getKernel(builtId), guestMib: 128 });
const { accel } = await resolveAccel('auto');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-boot-'));

// The floor's root: only a static busybox and an init that prints a line and powers off.
const floorTree = path.join(work, 'floor');
fs.mkdirSync(path.join(floorTree, 'bin'), { recursive: true });
for (const d of ['dev', 'proc', 'sys', 'run']) fs.mkdirSync(path.join(floorTree, d));
fs.copyFileSync('/bin/busybox', path.join(floorTree, 'bin', 'busybox'));
fs.chmodSync(path.join(floorTree, 'bin', 'busybox'), 0o755);
fs.writeFileSync(path.join(floorTree, 'init'), '#!/bin/busybox sh\n/bin/busybox echo FLOOR-INIT\n/bin/busybox poweroff -f\n', { mode: 0o755 });
const floorImg = path.join(work, 'floor.ext4');
await new Ext4Tools(log).mkfs({ root: floorTree, image: floorImg, sizeBytes: 32 << 20 });

async function freePort() {
  const s = net.createServer();
  const p = await new Promise((r) => s.listen(0, '127.0.0.1', () => r(s.address().port)));
  await new Promise((r) => s.close(r));
  return p;
}

function peakRssKiB(pid) {
  try {
    return Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** Boot once; resolve with ms from spawn to the marker line, to the port (if any), and QEMU's peak RSS. */
async function boot({ kernel, guestMib, rootfs, disks, marker, init, port, guestPort, extra = '' }) {
  const serial = path.join(work, `serial-${Math.random().toString(36).slice(2)}.log`);
  const argv = qemuArgv({
    kernel: kernel.vmlinuxPath, ...(kernel.initrdPath ? { initrd: kernel.initrdPath } : {}), append: `console=ttyS0 root=/dev/vda rw init=${init} quiet pci=off ${extra}`.trim(),
    rootfs, disks, memMib: guestMib, cpus: 1, accel, serialLog: serial,
    ...(port ? { userNet: { hostfwd: [{ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: port, guestPort }] } } : {}),
  });
  const t0 = performance.now();
  const q = spawn('qemu-system-x86_64', argv, { stdio: 'ignore' });
  const closed = new Promise((r) => q.on('close', r)); // attached now: the floor VM may be gone before we look
  let markerMs;
  let portMs;
  let rss = 0;
  const deadline = t0 + 120_000;
  while (performance.now() < deadline && (markerMs === undefined || (port && portMs === undefined))) {
    rss = Math.max(rss, peakRssKiB(q.pid));
    if (markerMs === undefined && fs.existsSync(serial) && fs.readFileSync(serial, 'utf8').includes(marker)) markerMs = performance.now() - t0;
    if (port && portMs === undefined && markerMs !== undefined) {
      const ok = await new Promise((r) => { const s = net.connect(port, '127.0.0.1'); s.once('connect', () => { s.destroy(); r(true); }); s.once('error', () => r(false)); });
      if (ok) portMs = performance.now() - t0;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  rss = Math.max(rss, peakRssKiB(q.pid));
  q.kill('SIGKILL');
  await closed;
  if (process.env.BENCH_DEBUG) console.error(init, { markerMs, portMs, rss, tail: fs.existsSync(serial) ? fs.readFileSync(serial, 'utf8').slice(-200) : '' });
  return { markerMs, portMs, rss };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const m = (xs, k) => Math.round(median(xs.map((x) => x[k])));
const results = [];
for (const { kernel, guestMib } of kernels) {
  const floor = [];
  const fb = [];
  for (let i = 0; i < runs; i++) {
    floor.push(await boot({ kernel, guestMib, rootfs: floorImg, disks: [], marker: 'FLOOR-INIT', init: '/init' }));
    const copy = path.join(work, `vm${i}.ext4`);
    const config = path.join(work, `config${i}.ext4`);
    await prepareRootfs(image.rootfsPath, copy);
    // As `firebuild run` does: without an initrd the kernel configures the address (ip=).
    const net = { mode: kernel.initrdPath ? 'static' : 'kernel', ip: '10.0.2.15/24', gateway: '10.0.2.2' };
    await makeConfigDisk({ hostname: 'bench', net, env: mergeEnv(image.metadata.config.env), command: effectiveCommand(image.metadata.config), user: image.metadata.config.user, workdir: image.metadata.config.workingDir, stopSignal: '' }, config, log);
    fb.push(await boot({ kernel, guestMib, rootfs: copy, disks: [config], marker: 'FIREBUILD-START', init: INIT_PATH, port: await freePort(), guestPort: 8080, extra: kernel.initrdPath ? '' : kernelIpArg(net.ip, net.gateway) }));
    fs.rmSync(copy);
    fs.rmSync(config);
  }
  results.push({
    kernel: kernel.id, initrd: Boolean(kernel.initrdPath), guestMemMib: guestMib,
    floor: { medianInitLineMs: m(floor, 'markerMs'), qemuPeakRssKiB: Math.max(...floor.map((x) => x.rss)) },
    firebuild: { medianInitLineMs: m(fb, 'markerMs'), medianPortOpenMs: m(fb, 'portMs'), qemuPeakRssKiB: Math.max(...fb.map((x) => x.rss)) },
    overheadMs: { initLine: m(fb, 'markerMs') - m(floor, 'markerMs'), portOpen: m(fb, 'portMs') - m(floor, 'markerMs') },
  });
}
fs.rmSync(work, { recursive: true, force: true });
process.stdout.write(JSON.stringify({ bench: 'boot', date: new Date().toISOString(), accel, runs, image: image.tag, results }, null, 2) + '\n');
