#!/usr/bin/env node
// bench/registry-cache: a rebuild on a second runner from the registry step cache (docs/step-cache.md)
// against a cold build, for each Dockerfile (examples/hello: one RUN; bench/five-run: five RUNs). Each
// run uses fresh homes (store, step cache, run cache): runner A builds cold with --cache-to (the cold
// figure is its build without the export, which is reported on its own), runner B, another home, builds
// the same Dockerfile with --cache-from. Both measured in this run, against the same registry. Prints
// JSON: medians of BENCH_RUNS runs, and B as a percentage of cold (issue 18's target: <= 10%).
//
// Needs `npm run build`, the Docker engine with the base image (scripts/make-base-image.sh), the local
// registry (scripts/install-deps.sh) and the fast kernel.
// Environment:
//   BENCH_RUNS         runs per figure (default 3)
//   BENCH_FAST_KERNEL  the vmlinux booting the build VMs (default: the root store's `default` kernel, else the
//                      test suite's kernel build under /var/cache/firebuild-test/kernel)
//   BENCH_REGISTRY     the registry (default $FIREBUILD_REGISTRY_ADDR, else 127.0.0.1:5000)
//   BENCH_DOCKERFILES  comma-separated Dockerfiles (default examples/hello/Dockerfile,bench/five-run/Dockerfile);
//                      e.g. test/fixtures/real-dockerfiles/buildpack-deps/bookworm/curl/Dockerfile for a real one
//                      (apt-get from Debian's mirrors: minutes cold)
//   BENCH_BASE         the image a Dockerfile's `FROM debian:bookworm` is built from (default debian:bookworm-slim,
//                      the offline base scripts/make-base-image.sh makes; other FROM lines are kept)
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { firebuildCli } from './firebuild-cli.mjs';

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const runs = Number(process.env.BENCH_RUNS ?? 3);
const registry = process.env.BENCH_REGISTRY ?? process.env.FIREBUILD_REGISTRY_ADDR ?? '127.0.0.1:5000';
const dockerfiles = (process.env.BENCH_DOCKERFILES ?? 'examples/hello/Dockerfile,bench/five-run/Dockerfile')
  .split(',').filter(Boolean).map((f) => path.resolve(REPO, f));
const kernel = process.env.BENCH_FAST_KERNEL ?? ['/var/lib/firebuild/kernels/default/vmlinux', '/var/cache/firebuild-test/kernel/home/kernels/default/vmlinux'].find((f) => fs.existsSync(f));

function fail(msg) {
  console.error(`bench/registry-cache: ${msg}`);
  process.exit(1);
}
if (!Number.isInteger(runs) || runs < 1) fail(`malformed BENCH_RUNS '${process.env.BENCH_RUNS}': give a whole number of runs, at least 1`);
for (const f of dockerfiles) if (!fs.existsSync(f)) fail(`no Dockerfile ${f}: fix BENCH_DOCKERFILES`);
if (!kernel || !fs.existsSync(kernel)) fail('no fast kernel: build one (firebuild kernel build --id default) or point BENCH_FAST_KERNEL at a vmlinux');
const ping = spawnSync('curl', ['-fsS', '-o', '/dev/null', `http://${registry}/v2/`]);
if (ping.status !== 0) fail(`no registry at ${registry}: run scripts/install-deps.sh or set BENCH_REGISTRY`);
const cmdline = (() => {
  try {
    return JSON.parse(fs.readFileSync(path.join(path.dirname(kernel), 'metadata.json'), 'utf8')).cmdline;
  } catch {
    return undefined;
  }
})();

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-regcache-'));
const base = process.env.BENCH_BASE ?? 'debian:bookworm-slim';
const copies = [];

/** The Dockerfile as built: `FROM debian:bookworm` (buildpack-deps) from BENCH_BASE, in a copy beside the original (its context). */
function asBuilt(df) {
  const text = fs.readFileSync(df, 'utf8');
  if (!/^FROM debian:bookworm$/m.test(text)) return df;
  const copy = path.join(path.dirname(df), `.bench-${process.pid}.Dockerfile`);
  copies.push(copy);
  fs.writeFileSync(copy, text.replace(/^FROM debian:bookworm$/m, `FROM ${base}`));
  return copy;
}

const fb = firebuildCli(process.env);

/** A runner: a home of its own with the kernel imported. */
function runner(name) {
  const home = path.join(work, name);
  const env = { FIREBUILD_HOME: home, FIREBUILD_REGISTRY_MIRRORS: '' };
  fb(['kernel', 'import', '--id', 'bench', kernel, ...(cmdline ? ['--cmdline', cmdline] : [])], env);
  return env;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.floor(s.length / 2)]);
};
const dfName = (df) => path.basename(path.dirname(df)).toLowerCase().replace(/[^a-z0-9-]/g, '-');

try {
  const out = { runs, registry, kernel, dockerfiles: {} };
  for (const df of dockerfiles) {
    const fig = { cold: [], export: [], second: [], pulled: [], pushed: [] };
    const built = asBuilt(df);
    for (let i = 0; i < runs; i++) {
      const cache = `registry:${registry}/bench/regcache-${process.pid}-${dfName(df)}-${i}`;
      const args = (t) => ['rootfs', '--engine', 'vm', '--dockerfile', built, '--context', path.dirname(df), '--tag', t, '--vmlinux-id', 'bench'];
      const a = fb([...args(`bench/${dfName(df)}:a${i}`), '--cache-to', cache], runner(`a-${dfName(df)}-${i}`));
      if (a.out.cached !== 0) throw new Error(`runner A's build of ${df} took ${a.out.cached} steps from a cache: it was not cold`);
      fig.cold.push(a.ms - a.out.registryCache.exportMs);
      fig.export.push(a.out.registryCache.exportMs);
      fig.pushed.push(a.out.registryCache.pushed);
      const b = fb([...args(`bench/${dfName(df)}:b${i}`), '--cache-from', cache], runner(`b-${dfName(df)}-${i}`));
      if (b.out.executed !== 0) throw new Error(`runner B's rebuild of ${df} ran ${b.out.executed} steps`);
      fig.second.push(b.ms);
      fig.pulled.push(b.out.registryCache.pulled);
    }
    const cold = median(fig.cold);
    const second = median(fig.second);
    out.dockerfiles[path.relative(REPO, df)] = {
      runSteps: fs.readFileSync(df, 'utf8').split('\n').filter((l) => /^\s*RUN\s/i.test(l)).length,
      medianMs: { 'cold build (runner A, without its export)': cold, 'rebuild on a second runner from the registry cache (runner B)': second, 'runner A\'s export (--cache-to)': median(fig.export) },
      entries: { pushedByA: median(fig.pushed), pulledByB: median(fig.pulled) },
      secondRunnerPercentOfCold: Math.round((second / cold) * 1000) / 10,
      target: '<= 10% of cold',
    };
  }
  console.log(JSON.stringify(out, null, 2));
} catch (err) {
  console.error(`bench/registry-cache: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
} finally {
  for (const c of copies) fs.rmSync(c, { force: true });
  fs.rmSync(work, { recursive: true, force: true });
}
