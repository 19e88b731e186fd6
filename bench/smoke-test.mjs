#!/usr/bin/env node
// bench/smoke-test: the boot figures the smoke-test action reports for examples/hello. Runs the bundled
// action (dist/smoke-test) as the runner does (INPUT_* variables, a GITHUB_OUTPUT file), BENCH_RUNS times,
// each followed by its post step; an auto host port and an HTTP probe through it. Reports, per run and as
// medians: boot-ms (VMM start to the init's start line), ready-ms (VMM start to the probe passing) and
// the whole step (node's start to its exit, as the runner times it). Prints JSON.
// Needs root, the bundle (`npm run bundle`), a stored examples/hello:1 and the fast kernel stored as
// `default` (`sudo bash scripts/quickstart.sh`). BENCH_RUNS (default 5), BENCH_IMAGE, BENCH_KERNEL.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const runs = Number(process.env.BENCH_RUNS ?? 5);
const image = process.env.BENCH_IMAGE ?? 'examples/hello:1';
const kernel = process.env.BENCH_KERNEL ?? 'default';

/** GITHUB_OUTPUT's `name<<delimiter` blocks. */
function outputs(file) {
  const out = {};
  for (const m of fs.readFileSync(file, 'utf8').matchAll(/^([^<\n]+)<<(ghadelimiter_[0-9a-f-]+)\r?\n([\s\S]*?)\r?\n\2\r?$/gm)) out[m[1]] = m[3];
  return out;
}

function step(entry, env) {
  const started = performance.now();
  const r = spawnSync(process.execPath, [path.join(REPO, 'dist', entry)], { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${entry} failed (${r.status}):\n${r.stdout}${r.stderr}`);
  return performance.now() - started;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = [];
for (let i = 0; i < runs; i++) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-smoke-test-'));
  const files = Object.fromEntries(['output', 'state', 'summary', 'env', 'path'].map((f) => [f, path.join(dir, f)]));
  for (const f of Object.values(files)) fs.writeFileSync(f, '');
  const runner = { GITHUB_ACTIONS: 'true', RUNNER_TEMP: dir, GITHUB_OUTPUT: files.output, GITHUB_STATE: files.state, GITHUB_STEP_SUMMARY: files.summary, GITHUB_ENV: files.env, GITHUB_PATH: files.path };
  const inputs = {
    INPUT_TAG: image, 'INPUT_VMLINUX-ID': kernel, INPUT_PORTS: '127.0.0.1:0:8080',
    'INPUT_WAIT-HTTP': 'http://127.0.0.1:auto:8080/cgi-bin/index.cgi', 'INPUT_BOOT-TIMEOUT': '600',
  };
  try {
    const stepMs = step('smoke-test/index.js', { ...runner, ...inputs });
    const o = outputs(files.output);
    const state = outputs(files.state);
    step('smoke-test/post/index.js', { ...runner, 'STATE_vmm-id': state['vmm-id'] });
    results.push({ bootMs: Number(o['boot-ms']), readyMs: Number(o['ready-ms']), stepMs: Math.round(stepMs) });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
console.log(JSON.stringify({
  image, kernel, runs,
  median: { bootMs: median(results.map((r) => r.bootMs)), readyMs: median(results.map((r) => r.readyMs)), stepMs: median(results.map((r) => r.stepMs)) },
  results,
}, null, 2));
