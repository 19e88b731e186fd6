// The benchmarks' way to run the firebuild CLI (bin/firebuild.js) and time it: shared by vm-build and registry-cache.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';

export const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

/**
 * `fb(args, env)`: run `firebuild ARGS` with `baseEnv` plus `env`; returns its wall time in ms and its JSON
 * result (`{}` for commands that print text). A failure throws with the last line of its stderr.
 */
export function firebuildCli(baseEnv = process.env) {
  return (args, env = {}) => {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [path.join(REPO, 'bin', 'firebuild.js'), ...args], { env: { ...baseEnv, ...env }, encoding: 'utf8', maxBuffer: 64 << 20 });
    const ms = performance.now() - t0;
    if (r.status !== 0) throw new Error(`firebuild ${args.join(' ')} failed: ${r.stderr.trim().split('\n').pop()}`);
    let out = {};
    try {
      out = JSON.parse(r.stdout || '{}');
    } catch {
      // commands that print text (kernel import)
    }
    return { ms, out };
  };
}
