#!/usr/bin/env node
// bench/convert: firebuild's conversion of a Docker image into ext4 (the whole command: docker export
// streamed into the userspace writer, in a process of its own) against the floor
// `docker export | tar -x && mkfs.ext4 -d`, both measured in this run, runs alternating, for the test
// base image and a large (~500 MB, many files) image. Prints JSON: median wall times, peak RSS, the
// ratio (target <= 0.8) . Needs the Docker engine (root for the floor's tar -x) and `npm run build` first.
// BENCH_RUNS (3), BENCH_IMAGES (base,large).
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const DOCKER = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const runs = Number(process.env.BENCH_RUNS ?? 3);
const allImages = {
  base: { ref: process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim' },
  large: { ref: 'firebuild-bench/large:1', tar: ['-C', '/', '--exclude=usr/share/locale', 'usr/share'] },
};
const images = Object.fromEntries((process.env.BENCH_IMAGES ?? 'base,large').split(',').map((n) => [n, allImages[n]]));

function ensureImage({ ref, tar }) {
  if (spawnSync(DOCKER, ['image', 'inspect', ref], { stdio: 'ignore' }).status === 0) return;
  if (!tar) throw new Error(`image ${ref} is not in the Docker engine`);
  execFileSync('sh', ['-c', `tar -c --numeric-owner ${tar.map((a) => `'${a}'`).join(' ')} 2>/dev/null | ${DOCKER} import - ${ref}`], { stdio: ['ignore', 'ignore', 'inherit'] });
}

/** Run a command under GNU time: wall seconds and the peak RSS of the process tree's largest member. */
function timed(cmd, args) {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', cmd, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  const [secs, kib] = r.stderr.trim().split('\n').pop().split(' ');
  return { seconds: Number(secs), peakRssKiB: Number(kib), stdout: r.stdout };
}

function floor(ref, work) {
  const dir = path.join(work, 'tree');
  fs.mkdirSync(dir);
  const cid = execFileSync(DOCKER, ['create', ref, '/x'], { encoding: 'utf8' }).trim();
  try {
    const size = 4 * 1024 * 1024 * 1024; // roomy; mkfs only writes what the tree needs
    const script = `${DOCKER} export ${cid} | tar -x --numeric-owner -p -C ${dir} && mkfs.ext4 -q -F -b 4096 -O ^has_journal -E lazy_itable_init=1,nodiscard -d ${dir} ${work}/floor.ext4 ${size / 4096}`;
    const t = timed('sh', ['-c', script]);
    const st = fs.statSync(path.join(work, 'floor.ext4'));
    return { seconds: t.seconds, peakRssKiB: t.peakRssKiB, imageAllocatedBytes: st.blocks * 512 };
  } finally {
    execFileSync(DOCKER, ['rm', '-f', cid], { stdio: 'ignore' });
  }
}

function firebuild(ref, work) {
  const t = timed(process.execPath, [path.join(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), 'convert-one.mjs'), ref, work]);
  return { ...JSON.parse(t.stdout), treePeakRssKiB: t.peakRssKiB };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = {};
for (const [name, img] of Object.entries(images)) {
  ensureImage(img);
  const f = [];
  const b = [];
  for (let i = 0; i < runs; i++) {
    for (const [list, fn] of [[f, floor], [b, firebuild]]) {
      const work = fs.mkdtempSync(path.join(os.tmpdir(), `bench-${name}-`));
      try {
        list.push(fn(img.ref, work));
      } finally {
        fs.rmSync(work, { recursive: true, force: true });
      }
    }
  }
  const fb = b[b.length - 1];
  const floorSeconds = median(f.map((x) => x.seconds));
  const fbSeconds = median(b.map((x) => x.seconds));
  results[name] = {
    image: img.ref,
    runs,
    contentBytes: fb.contentBytes,
    entries: fb.entries,
    floor: { medianSeconds: floorSeconds, peakRssKiB: Math.max(...f.map((x) => x.peakRssKiB)), imageAllocatedBytes: f[0].imageAllocatedBytes },
    firebuild: {
      medianSeconds: fbSeconds,
      phasesMs: fb.phasesMs,
      nodePeakRssKiB: Math.max(...b.map((x) => x.nodePeakRssKiB)),
      processTreePeakRssKiB: Math.max(...b.map((x) => x.treePeakRssKiB)),
      imageApparentBytes: fb.imageApparentBytes,
      imageAllocatedBytes: fb.imageAllocatedBytes,
    },
    ratios: {
      timeVsFloor: +(fbSeconds / floorSeconds).toFixed(3),
      allocatedVsContent: +(fb.imageAllocatedBytes / fb.contentBytes).toFixed(3),
      allocatedVsFloorImage: +(fb.imageAllocatedBytes / f[0].imageAllocatedBytes).toFixed(3),
    },
    targets: { timeVsFloor: 0.8, peakRssMiB: 256, met: fbSeconds / floorSeconds <= 0.8 && Math.max(...b.map((x) => x.nodePeakRssKiB)) <= 256 * 1024 },
  };
}
process.stdout.write(JSON.stringify({ bench: 'convert', date: new Date().toISOString(), results }, null, 2) + '\n');
