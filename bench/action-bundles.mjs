#!/usr/bin/env node
// bench/action-bundles: the size of dist/ (the bundled actions) and the start cost of each action's entry,
// for this checkout's dist/ against a baseline dist/ (by default the one checked in at BENCH_BASELINE_REV,
// taken out with git archive), both measured in this run, runs alternating. Each run is the step as the
// runner starts it (`node dist/<action>/index.js` with INPUT_* variables and GITHUB_OUTPUT/GITHUB_STATE
// files) with inputs that fail in the first line of the action (a required input missing; setup: a bad
// `vmm`, it has no required input), so what is timed is node plus loading the action's code; post steps
// run with no saved state (they return at once). CPU time is user+sys of the process (bash's `time`).
// Prints JSON: dist bytes and file counts, and per entry the median CPU and wall seconds of both layouts.
// usage: BENCH_RUNS=10 [BENCH_BASELINE_REV=<commit>|BENCH_BASELINE_DIST=/path/to/dist] node bench/action-bundles.mjs
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const runs = Number(process.env.BENCH_RUNS ?? 10);
const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-action-bundles-'));

/** The entries (as action.yml runs them) and the inputs that make each fail fast. */
const ENTRIES = {
  'setup main': { file: 'setup/index.js', inputs: { vmm: 'nope' }, code: 1 },
  'setup post': { file: 'setup/post/index.js', inputs: {}, code: 0 },
  'build-rootfs main': { file: 'build-rootfs/index.js', inputs: {}, code: 1 },
  'build-baseos main': { file: 'build-baseos/index.js', inputs: {}, code: 1 },
  'smoke-test main': { file: 'smoke-test/index.js', inputs: {}, code: 1 },
  'smoke-test post': { file: 'smoke-test/post/index.js', inputs: {}, code: 0 },
  'publish main': { file: 'publish/index.js', inputs: {}, code: 1 },
};

function baselineDist() {
  if (process.env.BENCH_BASELINE_DIST) return { dist: path.resolve(process.env.BENCH_BASELINE_DIST), from: process.env.BENCH_BASELINE_DIST };
  // Default: the last commit before dist/core existed (the five separately bundled actions).
  const rev = process.env.BENCH_BASELINE_REV ?? execFileSync('git', ['log', '-1', '--format=%H', '--diff-filter=A', '--', 'dist/core/index.js'], { cwd: here, encoding: 'utf8' }).trim() + '^';
  if (rev === '^') throw new Error('no commit adds dist/core/index.js: set BENCH_BASELINE_REV or BENCH_BASELINE_DIST');
  const dir = path.join(work, 'baseline');
  fs.mkdirSync(dir);
  const tar = execFileSync('git', ['archive', rev, 'dist', 'package.json'], { cwd: here, maxBuffer: 1 << 30 });
  execFileSync('tar', ['-x', '-C', dir], { input: tar });
  return { dist: path.join(dir, 'dist'), from: `git ${rev}` };
}

function sizeOf(dir) {
  let bytes = 0;
  let files = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    bytes += fs.statSync(path.join(e.parentPath, e.name)).size;
    files++;
  }
  return { bytes, files };
}

/** One step under bash's `time` (getrusage of the child: every thread, in milliseconds). */
function timed(dist, entry) {
  const runner = fs.mkdtempSync(path.join(work, 'runner-'));
  const env = { PATH: process.env.PATH, HOME: runner, LC_ALL: 'C', RUNNER_TEMP: runner, GITHUB_ACTIONS: 'true' };
  for (const f of ['output', 'state', 'env', 'path', 'summary']) fs.writeFileSync(path.join(runner, f), '');
  Object.assign(env, { GITHUB_OUTPUT: path.join(runner, 'output'), GITHUB_STATE: path.join(runner, 'state'), GITHUB_ENV: path.join(runner, 'env'), GITHUB_PATH: path.join(runner, 'path'), GITHUB_STEP_SUMMARY: path.join(runner, 'summary') });
  for (const [k, v] of Object.entries(entry.inputs)) env[`INPUT_${k.toUpperCase()}`] = v;
  const script = 'TIMEFORMAT="%3U %3S %3R"; time "$@" >/dev/null 2>&1; echo "rc=$?" >&2';
  const r = spawnSync('bash', ['-c', script, 'bench', process.execPath, path.join(dist, entry.file)], { env, encoding: 'utf8' });
  fs.rmSync(runner, { recursive: true, force: true });
  const lines = r.stderr.trim().split('\n');
  const rc = lines.pop();
  if (rc !== `rc=${entry.code}`) throw new Error(`${path.join(dist, entry.file)} ended ${rc}, expected rc=${entry.code}: ${r.stderr}`);
  const [user, sys, wall] = lines.pop().split(' ').map(Number);
  return { cpu: user + sys, wall };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x) => +x.toFixed(3);

try {
  const base = baselineDist();
  const layouts = { shared: path.join(here, 'dist'), baseline: base.dist };
  const samples = {};
  for (const name of Object.keys(ENTRIES)) for (const l of Object.keys(layouts)) samples[`${l} ${name}`] = [];
  const floor = { cpu: [], wall: [] };
  // Warm the page cache for both layouts before counting.
  for (const dist of Object.values(layouts)) for (const entry of Object.values(ENTRIES)) timed(dist, entry);
  for (let i = 0; i < runs; i++) {
    const n = spawnSync('bash', ['-c', 'TIMEFORMAT="%3U %3S %3R"; time "$@"', 'bench', process.execPath, '-e', '0'], { encoding: 'utf8' });
    const [u, s, w] = n.stderr.trim().split(' ').map(Number);
    floor.cpu.push(u + s);
    floor.wall.push(w);
    for (const [name, entry] of Object.entries(ENTRIES)) {
      for (const [l, dist] of Object.entries(layouts)) samples[`${l} ${name}`].push(timed(dist, entry));
    }
  }
  const results = {};
  for (const name of Object.keys(ENTRIES)) {
    const r = {};
    for (const l of Object.keys(layouts)) {
      const xs = samples[`${l} ${name}`];
      r[l] = { medianCpuSeconds: round(median(xs.map((x) => x.cpu))), medianWallSeconds: round(median(xs.map((x) => x.wall))) };
    }
    r.cpuSharedVsBaseline = round(r.shared.medianCpuSeconds / r.baseline.medianCpuSeconds);
    results[name] = r;
  }
  const size = { shared: sizeOf(layouts.shared), baseline: sizeOf(layouts.baseline) };
  process.stdout.write(JSON.stringify({
    bench: 'action-bundles',
    date: new Date().toISOString(),
    node: process.version,
    runs,
    baseline: base.from,
    loadAverage: os.loadavg().map(round),
    distBytes: { shared: size.shared.bytes, baseline: size.baseline.bytes, sharedVsBaseline: round(size.shared.bytes / size.baseline.bytes) },
    distFiles: { shared: size.shared.files, baseline: size.baseline.files },
    'node -e 0': { medianCpuSeconds: round(median(floor.cpu)), medianWallSeconds: round(median(floor.wall)) },
    results,
  }, null, 2) + '\n');
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
