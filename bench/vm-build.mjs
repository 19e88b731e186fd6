#!/usr/bin/env node
// bench/vm-build: cold build and unchanged rebuild with firebuild's own engine (`rootfs --engine vm`: RUN
// steps in microVMs, QEMU/TCG here) against `docker build` alone (the classic builder), for each
// Dockerfile (examples/hello: one RUN; bench/five-run: five RUNs) and for each kernel booting the build
// VMs: the fast kernel (an ELF vmlinux, no initrd) and Debian's cloud kernel with its initrd. All measured
// in this run, the engines' order rotated from run to run. Prints JSON: wall-clock medians of BENCH_RUNS
// runs, the vm engine's cold split (VM boots, steps, final conversion) and the vm engine's times as
// multiples of `docker build`'s.
//
// Needs root, `npm run build`, the Docker engine (scripts/install-deps.sh) with the base image
// (scripts/make-base-image.sh), Debian's cloud kernel in /boot, and the fast kernel.
// Environment:
//   BENCH_RUNS          runs per figure (default 3)
//   BENCH_FAST_KERNEL   the fast kernel's vmlinux (default /var/lib/firebuild/kernels/default/vmlinux, the
//                       `default` kernel of the root store); its stored command line, when a metadata.json
//                       lies beside it, is imported with it
//   BENCH_DOCKERFILES   comma-separated Dockerfiles (default examples/hello/Dockerfile,bench/five-run/Dockerfile)
//   BENCH_ENGINE_DOCKER=1  also `rootfs --engine docker` (off by default: it adds ~20 s a Dockerfile a run
//                       and was measured before; see docs/bench.md)
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { firebuildCli } from './firebuild-cli.mjs';
import { performance } from 'node:perf_hooks';

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const runs = Number(process.env.BENCH_RUNS ?? 3);
const dockerfiles = (process.env.BENCH_DOCKERFILES ?? 'examples/hello/Dockerfile,bench/five-run/Dockerfile')
  .split(',').filter(Boolean).map((f) => path.resolve(REPO, f));
const fastKernel = path.resolve(process.env.BENCH_FAST_KERNEL ?? '/var/lib/firebuild/kernels/default/vmlinux');
const withEngineDocker = process.env.BENCH_ENGINE_DOCKER === '1';
const DOCKER = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

function fail(msg) {
  console.error(`bench/vm-build: ${msg}`);
  process.exit(1);
}
if (!Number.isInteger(runs) || runs < 1) fail(`malformed BENCH_RUNS '${process.env.BENCH_RUNS}': give a whole number of runs, at least 1`);
for (const f of dockerfiles) if (!fs.existsSync(f)) fail(`no Dockerfile ${f}: fix BENCH_DOCKERFILES`);
if (!fs.existsSync(fastKernel)) fail(`no fast kernel at ${fastKernel}: build one (firebuild kernel build --id default) or point BENCH_FAST_KERNEL at a vmlinux`);
const vmlinuz = fs.readdirSync('/boot').filter((f) => /^vmlinuz-.*cloud/.test(f)).sort().pop();
if (!vmlinuz) fail('no Debian cloud kernel in /boot: run scripts/install-deps.sh');

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-vmbuild-'));
const baseEnv = { ...process.env, DOCKER_BUILDKIT: '0' };

// Each kernel gets its own FIREBUILD_HOME (store, run cache), so nothing built with one serves the other.
const fastMeta = (() => {
  try {
    return JSON.parse(fs.readFileSync(path.join(path.dirname(fastKernel), 'metadata.json'), 'utf8'));
  } catch {
    return {};
  }
})();
const kernels = [
  { key: 'fast', label: 'vm engine, fast kernel (vmlinux, no initrd)', file: fastKernel, cmdline: fastMeta.cmdline },
  { key: 'cloud', label: 'vm engine, Debian cloud kernel + initrd', file: path.join('/boot', vmlinuz), initrd: path.join('/boot', vmlinuz.replace('vmlinuz', 'initrd.img')) },
].map((k) => ({ ...k, home: path.join(work, `home-${k.key}`) }));

const fb = firebuildCli(baseEnv);

function timed(cmd, args) {
  const t0 = performance.now();
  execFileSync(cmd, args, { env: baseEnv, stdio: 'ignore' });
  return performance.now() - t0;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.floor(s.length / 2)]);
};
const ratio = (a, b) => Math.round((a / b) * 10) / 10;

const dockerTags = new Set();
const dfName = (df) => path.basename(path.dirname(df)).toLowerCase().replace(/[^a-z0-9-]/g, '-');

/** One vm-engine round for kernel `k`: cold (an empty step cache of its own, a new tag), unchanged rebuild into the same tag, rebuild into a new tag. */
function vmRound(k, df, i, fig) {
  const env = { FIREBUILD_HOME: k.home, FIREBUILD_CACHE_DIR: path.join(k.home, `cache-${dfName(df)}-${i}`) };
  const tag = `bench/${dfName(df)}:${i}`;
  const args = (t) => ['rootfs', '--engine', 'vm', '--dockerfile', df, '--tag', t, '--vmlinux-id', 'bench'];
  const cold = fb(args(tag), env);
  if (cold.out.cached !== 0) throw new Error(`the cold build of ${df} took ${cold.out.cached} steps from a cache: it was not cold`);
  fig.cold.push(cold.ms);
  fig.split.push(cold.out.timings);
  const again = fb(args(tag), env);
  if (again.out.executed !== 0) throw new Error(`the unchanged rebuild of ${df} ran ${again.out.executed} steps`);
  fig.rebuild.push(again.ms);
  fig.rebuildNewTag.push(fb(args(`${tag}-b`), env).ms);
}

/** `docker build` alone: --no-cache (every step runs; the base stays, as it does for the vm engine), then the same build with its cache. */
function dockerRound(df, i, fig) {
  const tag = `bench-vmbuild-${dfName(df)}:${i}`;
  dockerTags.add(tag);
  const args = ['build', '-q', '-t', tag, '-f', df, path.dirname(df)];
  fig.cold.push(timed(DOCKER, [...args.slice(0, 2), '--no-cache', ...args.slice(2)]));
  fig.rebuild.push(timed(DOCKER, args));
}

/** firebuild with the Docker engine: cold once the engine's build cache for it is gone, then again. */
function engineDockerRound(df, i, fig) {
  const env = { FIREBUILD_HOME: path.join(work, 'home-engine-docker') };
  spawnSync(DOCKER, ['image', 'prune', '-f'], { env: baseEnv, stdio: 'ignore' });
  for (const img of execFileSync(DOCKER, ['images', '-q', 'firebuild-build/*'], { env: baseEnv, encoding: 'utf8' }).split('\n').filter(Boolean)) spawnSync(DOCKER, ['rmi', '-f', img], { env: baseEnv, stdio: 'ignore' });
  spawnSync(DOCKER, ['image', 'prune', '-f'], { env: baseEnv, stdio: 'ignore' });
  const args = ['rootfs', '--engine', 'docker', '--dockerfile', df, '--tag', `bench/docker-${dfName(df)}:${i}`];
  fig.cold.push(fb(args, env).ms);
  fig.rebuild.push(fb([...args, '--overwrite'], env).ms);
}

try {
  for (const k of kernels) {
    fb(['kernel', 'import', '--id', 'bench', k.file, ...(k.initrd ? ['--initrd', k.initrd] : []), ...(k.cmdline ? ['--cmdline', k.cmdline] : [])], { FIREBUILD_HOME: k.home });
  }
  const figs = new Map(dockerfiles.map((df) => [df, {
    vm: Object.fromEntries(kernels.map((k) => [k.key, { cold: [], rebuild: [], rebuildNewTag: [], split: [] }])),
    dockerBuild: { cold: [], rebuild: [] },
    engineDocker: { cold: [], rebuild: [] },
  }]));
  const contenders = [...kernels.map((k) => ({ run: (df, i, f) => vmRound(k, df, i, f.vm[k.key]) })), { run: (df, i, f) => dockerRound(df, i, f.dockerBuild) }];
  for (let i = 0; i < runs; i++) {
    for (const df of dockerfiles) {
      // Rotate who goes first, so a machine that slows down (or warms up) mid-run spreads over all of them.
      for (let j = 0; j < contenders.length; j++) contenders[(i + j) % contenders.length].run(df, i, figs.get(df));
      if (withEngineDocker) engineDockerRound(df, i, figs.get(df));
    }
  }

  const out = {
    runs,
    accel: process.env.FIREBUILD_ACCEL ?? 'auto (TCG where KVM is unusable)',
    kernels: Object.fromEntries(kernels.map((k) => [k.key, { file: k.file, ...(k.initrd ? { initrd: k.initrd } : {}), ...(k.cmdline ? { cmdline: k.cmdline } : {}), bytes: fs.statSync(k.file).size }])),
    dockerfiles: {},
  };
  for (const df of dockerfiles) {
    const f = figs.get(df);
    const dCold = median(f.dockerBuild.cold);
    const dRe = median(f.dockerBuild.rebuild);
    const medianMs = {};
    const vmColdSplitMs = {};
    const timesDockerBuild = {};
    for (const k of kernels) {
      const v = f.vm[k.key];
      const split = (name) => median(v.split.map((s) => s[name]));
      medianMs[k.label] = { cold: median(v.cold), rebuildUnchanged: median(v.rebuild), rebuildIntoNewTag: median(v.rebuildNewTag) };
      vmColdSplitMs[k.key] = { boot: split('bootMs'), steps: split('stepsMs'), conversion: split('convertMs'), total: split('totalMs') };
      timesDockerBuild[k.key] = { cold: ratio(median(v.cold), dCold), rebuildUnchanged: ratio(median(v.rebuild), dRe) };
    }
    medianMs['docker build alone (classic builder)'] = { cold: dCold, rebuildUnchanged: dRe };
    if (withEngineDocker) medianMs['firebuild --engine docker'] = { cold: median(f.engineDocker.cold), rebuildUnchanged: median(f.engineDocker.rebuild) };
    out.dockerfiles[path.relative(REPO, df)] = {
      runSteps: fs.readFileSync(df, 'utf8').split('\n').filter((l) => /^\s*RUN\s/i.test(l)).length,
      medianMs,
      vmColdSplitMs,
      timesDockerBuild,
      fastKernelColdSpeedup: ratio(median(f.vm.cloud.cold), median(f.vm.fast.cold)),
    };
  }
  console.log(JSON.stringify(out, null, 2));
} catch (err) {
  console.error(`bench/vm-build: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
} finally {
  for (const tag of dockerTags) spawnSync(DOCKER, ['rmi', '-f', tag], { env: baseEnv, stdio: 'ignore' });
  fs.rmSync(work, { recursive: true, force: true });
}
