#!/usr/bin/env node
// bench/cli-start: the CPU time (user+sys, every thread of the process) and wall time of short firebuild
// commands against the floor `node -e 0`, runs alternating, all measured in this run: `--version`,
// `image ls` and `image ls --json` (FIREBUILD_HOME an empty directory), `rootfs --plan` of
// examples/hello, and `image ls` of a store holding one image (its metadata is validated: zod loads).
// BENCH_BASELINE_REPO=/path/to/another/checkout (with its lib/ built) adds that checkout's figures to
// each run, for a before/after in the same run; both checkouts' outputs are compared.
// Prints JSON: medians, each command's median CPU time over node's (target <= 2 on the empty store).
// usage: npm run build && BENCH_RUNS=10 [BENCH_BASELINE_REPO=/path/to/base] node bench/cli-start.mjs
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const runs = Number(process.env.BENCH_RUNS ?? 10);
const TARGET = 2;
const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const repos = { firebuild: here };
if (process.env.BENCH_BASELINE_REPO) repos.baseline = path.resolve(process.env.BENCH_BASELINE_REPO);
for (const [name, dir] of Object.entries(repos)) {
  if (!fs.existsSync(path.join(dir, 'lib', 'cli', 'main.js'))) throw new Error(`${name}: ${dir}/lib/cli/main.js is missing: run npm run build there`);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-cli-start-'));
const homes = { empty: path.join(work, 'empty'), oneImage: path.join(work, 'one-image') };
const commands = {
  '--version': { args: ['--version'], home: homes.empty },
  'image ls': { args: ['image', 'ls'], home: homes.empty },
  'image ls --json': { args: ['image', 'ls', '--json'], home: homes.empty },
  'rootfs --plan': { args: ['rootfs', '--plan', '--dockerfile', 'examples/hello/Dockerfile'], home: homes.empty },
  'image ls (one image)': { args: ['image', 'ls'], home: homes.oneImage },
};
const baseEnv = { ...process.env, LC_ALL: 'C' };
for (const k of ['FIREBUILD_PROFILE', 'FIREBUILD_CACHE_DIR', 'FIREBUILD_LOG_LEVEL', 'NODE_OPTIONS']) delete baseEnv[k];
const envOf = (home) => ({ ...baseEnv, FIREBUILD_HOME: home });

/**
 * One run under bash's `time`: it reports the child's getrusage (every thread, in milliseconds, where GNU
 * time rounds to 10 ms, a tenth of `node -e 0`). ./bin/firebuild.js runs as a user runs it (sh execs node).
 */
function timed(cwd, argv, home = homes.empty) {
  const script = 'TIMEFORMAT="%3U %3S %3R"; time "$@" >/dev/null 2>&1; echo "rc=$?" >&2';
  const r = spawnSync('bash', ['-c', script, 'bench', ...argv], { cwd, env: envOf(home), encoding: 'utf8' });
  const lines = r.stderr.trim().split('\n');
  const rc = lines.pop();
  if (rc !== 'rc=0') throw new Error(`${argv.join(' ')} in ${cwd} failed (${rc}): ${r.stderr}`);
  const [user, sys, wall] = lines.pop().split(' ').map(Number);
  return { cpu: user + sys, wall };
}

/** The command's output, once, with the checkout's path made neutral: both checkouts must print the same. */
function output(cwd, argv, home) {
  const r = spawnSync(argv[0], argv.slice(1), { cwd, env: envOf(home), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} in ${cwd} exited ${r.status}: ${r.stderr}`);
  return r.stdout.split(cwd).join('<repo>');
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x) => +x.toFixed(3);

try {
  // The one image, written by this checkout's store (the metadata both checkouts read).
  const { DirectoryStorage } = await import(pathToFileURL(path.join(here, 'lib', 'store', 'directory.js')).href);
  const store = new DirectoryStorage({ rootfsRoot: path.join(homes.oneImage, 'rootfs'), kernelRoot: path.join(homes.oneImage, 'kernels'), createRoots: true });
  await store.writeImage('bench/one:1', async (s) => {
    fs.writeFileSync(s.rootfsPath, Buffer.alloc(4096));
    return { type: 'rootfs', source: { kind: 'test', ref: 'bench' }, parents: [], config: {}, created: '2026-01-01T00:00:00.000Z' };
  });
  const sameOutput = {};
  for (const [name, { args, home }] of Object.entries(commands)) {
    const outs = Object.values(repos).map((dir) => output(dir, ['./bin/firebuild.js', ...args], home));
    sameOutput[name] = outs.every((o) => o === outs[0]);
  }
  const samples = { node: [] };
  for (const name of Object.keys(commands)) for (const repo of Object.keys(repos)) samples[`${repo} ${name}`] = [];
  timed(here, [process.execPath, '-e', '0']); // warm the page cache for both checkouts before counting
  for (const dir of Object.values(repos)) for (const { args, home } of Object.values(commands)) timed(dir, ['./bin/firebuild.js', ...args], home);
  for (let i = 0; i < runs; i++) {
    samples.node.push(timed(here, [process.execPath, '-e', '0']));
    for (const [name, { args, home }] of Object.entries(commands)) {
      for (const [repo, dir] of Object.entries(repos)) samples[`${repo} ${name}`].push(timed(dir, ['./bin/firebuild.js', ...args], home));
    }
  }
  const stat = (xs) => ({ medianCpuSeconds: round(median(xs.map((x) => x.cpu))), medianWallSeconds: round(median(xs.map((x) => x.wall))) });
  const node = stat(samples.node);
  const results = {};
  for (const name of Object.keys(commands)) {
    const r = {};
    for (const repo of Object.keys(repos)) {
      const s = stat(samples[`${repo} ${name}`]);
      r[repo] = { ...s, cpuVsNode: round(s.medianCpuSeconds / node.medianCpuSeconds) };
    }
    if (r.baseline) r.cpuVsBaseline = round(r.firebuild.medianCpuSeconds / r.baseline.medianCpuSeconds);
    if (repos.baseline) r.sameOutputAsBaseline = sameOutput[name];
    if (commands[name].home === homes.empty) r.targetMet = r.firebuild.cpuVsNode <= TARGET;
    results[name] = r;
  }
  process.stdout.write(JSON.stringify({
    bench: 'cli-start',
    date: new Date().toISOString(),
    node: process.version,
    runs,
    repos,
    loadAverage: os.loadavg().map(round),
    target: `median CPU time (user+sys) <= ${TARGET}x node -e 0`,
    'node -e 0': node,
    results,
  }, null, 2) + '\n');
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
