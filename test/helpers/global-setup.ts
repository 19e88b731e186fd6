import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

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

  const tar = execFileSync('bash', [path.join(REPO, 'scripts', 'make-base-image.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  process.env.FIREBUILD_TEST_BASE_TAR = tar;
  process.env.FIREBUILD_TEST_BASE_IMAGE = 'debian:bookworm-slim';
  process.env.FIREBUILD_REGISTRY_ADDR = registry;
}
