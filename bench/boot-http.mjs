#!/usr/bin/env node
// bench/boot-http: boot to ready. `firebuild run --daemonize --wait-http` of examples/hello (the whole
// command: start to exit, which is when its HTTP probe got a 200), against a hand-made floor measured in
// the same run, alternating: the same kernel and a copy of the same stored image, booted by QEMU with a
// 6-line busybox init that configures the network and starts the same server, timed from QEMU's start to
// the first HTTP 200 (polled every 10 ms). The floor's image copy is made before its clock starts.
// Prints JSON. Needs root, `npm run build`, a stored examples/hello:1 and the fast kernel stored as
// `default` (`sudo bash scripts/quickstart.sh` makes both). BENCH_RUNS (default 5), BENCH_KERNEL,
// BENCH_IMAGE, BENCH_NETWORK (firebuild's --network, default its own default: isolated user-mode).
/* global fetch, AbortSignal */
import { spawn, execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStorage, resolveSettings } from '../lib/profile/settings.js';
import { copySparse } from '../lib/util/fs.js';
import { qemuArgv, resolveAccel } from '../lib/vmm/qemu.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const runs = Number(process.env.BENCH_RUNS ?? 5);
const storage = openStorage(resolveSettings({}, undefined));
const image = await storage.getImage(process.env.BENCH_IMAGE ?? 'examples/hello:1');
const kernel = await storage.getKernel(process.env.BENCH_KERNEL ?? 'default');
const { accel } = await resolveAccel('auto');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-boot-http-'));
// As `firebuild run` boots by default (its --mem and --cpus defaults).
const MEM = 256;
const CPUS = 1;

// The floor's init: six lines of busybox, run as PID 1 from the image copy itself.
const FLOOR_INIT = `#!/.floor/busybox sh
/.floor/busybox mount -t proc proc /proc; /.floor/busybox mount -t tmpfs tmpfs /tmp
/.floor/busybox ip link set lo up; /.floor/busybox ip link set eth0 up
/.floor/busybox ip addr add 10.0.2.15/24 dev eth0; /.floor/busybox ip route add default via 10.0.2.2
/.floor/busybox hostname floor; export GREETING=hi HOME=/srv/hello; cd /srv/hello
exec /.floor/busybox su -p -s /bin/sh hello -c '/bin/sh /srv/hello/serve.sh'
`;
fs.writeFileSync(path.join(work, 'floor-init'), FLOOR_INIT);

async function freePort() {
  const s = net.createServer();
  const p = await new Promise((r) => s.listen(0, '127.0.0.1', () => r(s.address().port)));
  await new Promise((r) => s.close(r));
  return p;
}

async function http200(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await res.text();
    return res.status === 200;
  } catch {
    return false;
  }
}

async function floorOnce(i) {
  const copy = path.join(work, `floor${i}.ext4`);
  await copySparse(image.rootfsPath, copy);
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((b) => fs.existsSync(b));
  execFileSync('debugfs', ['-w', '-f', '-', copy], {
    input: ['mkdir /.floor', `write ${busybox} /.floor/busybox`, `write ${path.join(work, 'floor-init')} /.floor/init`, 'sif /.floor/busybox mode 0100755', 'sif /.floor/init mode 0100755', ''].join('\n'),
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/cgi-bin/index.cgi`;
  const argv = qemuArgv({
    kernel: kernel.vmlinuxPath, ...(kernel.initrdPath ? { initrd: kernel.initrdPath } : {}),
    append: 'console=ttyS0 root=/dev/vda rw init=/.floor/init quiet pci=off',
    rootfs: copy, disks: [], memMib: MEM, cpus: CPUS, accel, serialLog: path.join(work, `floor${i}.log`),
    userNet: { hostfwd: [{ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: port, guestPort: 8080 }] },
  });
  const t0 = performance.now();
  const q = spawn('qemu-system-x86_64', argv, { stdio: 'ignore' });
  const closed = new Promise((r) => q.on('close', r));
  let ms;
  while (performance.now() - t0 < 120_000) {
    if (await http200(url)) {
      ms = performance.now() - t0;
      break;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  q.kill('SIGKILL');
  await closed;
  if (ms === undefined) throw new Error(`the floor never answered: ${fs.readFileSync(path.join(work, `floor${i}.log`), 'utf8').slice(-400)}`);
  fs.rmSync(copy);
  return ms;
}

function cli(args) {
  return new Promise((resolve, reject) => {
    const c = spawn(path.join(REPO, 'bin', 'firebuild.js'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`firebuild ${args.join(' ')}: exit ${code}: ${err.slice(-400)}`))));
  });
}

async function firebuildOnce(i) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/cgi-bin/index.cgi`;
  const t0 = performance.now();
  const out = await cli(['run', '--from', image.tag, '--vmlinux-id', kernel.id, '--name', `bh${process.pid}x${i}`,
    ...(process.env.BENCH_NETWORK ? ['--network', process.env.BENCH_NETWORK] : []),
    '--port', `127.0.0.1:${port}:8080`, '--env', 'GREETING=hi', '--daemonize', '--wait-http', url]);
  const ms = performance.now() - t0;
  await cli(['kill', '--vmm-id', JSON.parse(out)['vmm-id'], '--shutdown-timeout', '0']);
  return ms;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const floor = [];
const fb = [];
try {
  for (let i = 0; i < runs; i++) {
    floor.push(await floorOnce(i));
    fb.push(await firebuildOnce(i));
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
const f = Math.round(median(floor));
const b = Math.round(median(fb));
process.stdout.write(JSON.stringify({
  bench: 'boot-http', date: new Date().toISOString(), accel, runs, image: image.tag, kernel: kernel.id, initrd: Boolean(kernel.initrdPath), memMib: MEM,
  network: process.env.BENCH_NETWORK ?? 'default',
  floor: { medianMs: f, runsMs: floor.map(Math.round) },
  firebuild: { medianMs: b, runsMs: fb.map(Math.round) },
  ratio: Number((b / f).toFixed(3)), target: 1.1,
}, null, 2) + '\n');
