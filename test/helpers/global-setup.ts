import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Where the suite keeps the kernel build (sources, objects) and the store holding the built kernel. */
export const KERNEL_CACHE = process.env.FIREBUILD_TEST_KERNEL_CACHE ?? '/var/cache/firebuild-test/kernel';

function buildTestKernel(): string {
  const env = { ...process.env, FIREBUILD_HOME: path.join(KERNEL_CACHE, 'home') };
  const started = Date.now();
  execFileSync(path.join(REPO, 'bin', 'firebuild.js'), ['kernel', 'build', '--overwrite', '--version', '6.1', '--cache-dir', KERNEL_CACHE], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  const ls = JSON.parse(execFileSync(path.join(REPO, 'bin', 'firebuild.js'), ['kernel', 'ls', '--json'], { env, encoding: 'utf8' })) as { id: string; path: string }[];
  const k = ls.find((x) => x.id === 'default');
  if (!k) throw new Error('global setup: kernel build stored no kernel `default`');
  process.stderr.write(`global setup: the fast guest kernel is ready (${Math.round((Date.now() - started) / 1000)} s)\n`);
  return path.join(k.path, 'vmlinux');
}

/**
 * Integration tests run against real parts. scripts/install-deps.sh (called by .ci/run and the README's
 * test command) installs and starts them; here we only check they answer and make the offline base image.
 */
export default async function globalSetup(): Promise<void> {
  // The CLI tests run the built bin/firebuild.js: make sure lib/ matches src/.
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO, stdio: 'inherit' });

  const docker = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
  try {
    execFileSync(docker, ['version', '--format', '{{.Server.Version}}'], { stdio: 'pipe' });
  } catch {
    throw new Error('integration tests need the Docker engine: run scripts/install-deps.sh first');
  }
  const registry = process.env.FIREBUILD_REGISTRY_ADDR ?? '127.0.0.1:5000';
  const res = await fetch(`http://${registry}/v2/`).catch(() => undefined);
  if (!res?.ok) throw new Error(`integration tests need the local registry at ${registry}: run scripts/install-deps.sh first`);

  // The fast guest kernel, built once per machine and kept (keyed by source and fragment): a later run
  // only repeats make's up-to-date check. VM tests import its vmlinux (helpers/vm.ts importTestKernel).
  process.env.FIREBUILD_TEST_KERNEL = buildTestKernel();

  const tar = execFileSync('bash', [path.join(REPO, 'scripts', 'make-base-image.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  process.env.FIREBUILD_TEST_BASE_TAR = tar;
  process.env.FIREBUILD_TEST_BASE_IMAGE = 'debian:bookworm-slim';
  process.env.FIREBUILD_REGISTRY_ADDR = registry;
}
