#!/usr/bin/env node
// bench/vm-build: cold build and unchanged rebuild of the same Dockerfile with firebuild's own engine
// (`rootfs --engine vm`: RUN steps in microVMs, QEMU/TCG here), with `rootfs --engine docker`, and with
// `docker build` alone (the classic builder), all measured in this run. Prints JSON: wall-clock medians
// of BENCH_RUNS runs, and for the vm engine the split into VM boots, steps and the final conversion.
// Needs root, `npm run build`, the Docker engine (scripts/install-deps.sh) with the base image
// (scripts/make-base-image.sh), and Debian's cloud kernel in /boot. BENCH_DOCKERFILE picks the
// Dockerfile (default: examples/hello/Dockerfile).
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const runs = Number(process.env.BENCH_RUNS ?? 3);
const dockerfile = path.resolve(process.env.BENCH_DOCKERFILE ?? path.join(REPO, 'examples', 'hello', 'Dockerfile'));
const DOCKER = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-vmbuild-'));
const home = path.join(work, 'home');
const env = { ...process.env, FIREBUILD_HOME: home, DOCKER_BUILDKIT: '0' };

function fb(args, extraEnv = {}) {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [path.join(REPO, 'bin', 'firebuild.js'), ...args], { env: { ...env, ...extraEnv }, encoding: 'utf8', maxBuffer: 64 << 20 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`firebuild ${args.join(' ')} failed: ${r.stderr.trim().split('\n').pop()}`);
  let out = {};
  try {
    out = JSON.parse(r.stdout || '{}');
  } catch {
    // commands that print text (kernel import)
  }
  return { ms, out };
}

function timed(cmd, args) {
  const t0 = performance.now();
  execFileSync(cmd, args, { env, stdio: 'ignore' });
  return performance.now() - t0;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.floor(s.length / 2)]);
};

const figures = { vm: { cold: [], rebuild: [], rebuildNewTag: [], split: [] }, firebuildDocker: { cold: [], rebuild: [] }, dockerBuild: { cold: [], rebuild: [] } };
try {
  const vmlinuz = fs.readdirSync('/boot').filter((f) => /^vmlinuz-.*cloud/.test(f)).sort().pop();
  if (!vmlinuz) throw new Error('no Debian cloud kernel in /boot: run scripts/install-deps.sh');
  fb(['kernel', 'import', '--id', 'bench', path.join('/boot', vmlinuz), '--initrd', path.join('/boot', vmlinuz.replace('vmlinuz', 'initrd.img'))]);
  for (let i = 0; i < runs; i++) {
    // vm engine: cold = empty step cache and no image; rebuild = unchanged, same tag; new tag = every step from the cache.
    const cache = path.join(work, `cache-${i}`);
    const cold = fb(['rootfs', '--engine', 'vm', '--dockerfile', dockerfile, '--tag', `bench/vm:${i}`], { FIREBUILD_CACHE_DIR: cache });
    figures.vm.cold.push(cold.ms);
    figures.vm.split.push(cold.out.timings);
    figures.vm.rebuild.push(fb(['rootfs', '--engine', 'vm', '--dockerfile', dockerfile, '--tag', `bench/vm:${i}`], { FIREBUILD_CACHE_DIR: cache }).ms);
    figures.vm.rebuildNewTag.push(fb(['rootfs', '--engine', 'vm', '--dockerfile', dockerfile, '--tag', `bench/vm:${i}-b`], { FIREBUILD_CACHE_DIR: cache }).ms);

    // docker build alone: --no-cache, then the same build with its cache.
    figures.dockerBuild.cold.push(timed(DOCKER, ['build', '-q', '--no-cache', '-t', `bench-vmbuild:${i}`, '-f', dockerfile, path.dirname(dockerfile)]));
    figures.dockerBuild.rebuild.push(timed(DOCKER, ['build', '-q', '-t', `bench-vmbuild:${i}`, '-f', dockerfile, path.dirname(dockerfile)]));

    // firebuild with the Docker engine: cold after the engine's build cache for it is gone, then again.
    spawnSync(DOCKER, ['image', 'prune', '-f'], { env, stdio: 'ignore' });
    spawnSync(DOCKER, ['rmi', '-f', `bench-vmbuild:${i}`], { env, stdio: 'ignore' });
    for (const img of execFileSync(DOCKER, ['images', '-q', 'firebuild-build/*'], { env, encoding: 'utf8' }).split('\n').filter(Boolean)) spawnSync(DOCKER, ['rmi', '-f', img], { env, stdio: 'ignore' });
    spawnSync(DOCKER, ['image', 'prune', '-f'], { env, stdio: 'ignore' });
    figures.firebuildDocker.cold.push(fb(['rootfs', '--engine', 'docker', '--dockerfile', dockerfile, '--tag', `bench/docker:${i}`]).ms);
    figures.firebuildDocker.rebuild.push(fb(['rootfs', '--engine', 'docker', '--dockerfile', dockerfile, '--tag', `bench/docker:${i}`, '--overwrite']).ms);
  }
  const split = (k) => median(figures.vm.split.map((s) => s[k]));
  const out = {
    dockerfile: path.relative(REPO, dockerfile),
    runs,
    accel: process.env.FIREBUILD_ACCEL ?? 'auto (TCG where KVM is unusable)',
    medianMs: {
      'vm engine': { cold: median(figures.vm.cold), rebuildUnchanged: median(figures.vm.rebuild), rebuildIntoNewTag: median(figures.vm.rebuildNewTag) },
      'firebuild --engine docker': { cold: median(figures.firebuildDocker.cold), rebuild: median(figures.firebuildDocker.rebuild) },
      'docker build alone': { cold: median(figures.dockerBuild.cold), rebuild: median(figures.dockerBuild.rebuild) },
    },
    vmColdSplitMs: { boot: split('bootMs'), steps: split('stepsMs'), conversion: split('convertMs'), total: split('totalMs') },
    vmRebuildSpeedup: Math.round((median(figures.vm.cold) / median(figures.vm.rebuild)) * 10) / 10,
  };
  console.log(JSON.stringify(out, null, 2));
} finally {
  for (let i = 0; i < runs; i++) spawnSync(DOCKER, ['rmi', '-f', `bench-vmbuild:${i}`], { env, stdio: 'ignore' });
  fs.rmSync(work, { recursive: true, force: true });
}
