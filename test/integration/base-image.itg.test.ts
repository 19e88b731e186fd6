import { expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

const docker = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

test('the offline Debian base image is a Docker image, runs, and is in the local registry', async () => {
  const tar = process.env.FIREBUILD_TEST_BASE_TAR as string;
  expect(fs.statSync(tar).size).toBeGreaterThan(10 << 20);
  const out = execFileSync(docker, ['run', '--rm', '--network', 'none', 'debian:bookworm-slim', 'sh', '-c', 'cat /etc/debian_version; busybox true && echo busybox'], { encoding: 'utf8' });
  expect(out).toMatch(/^12\.\d+\nbusybox\n$/);
  const registry = process.env.FIREBUILD_REGISTRY_ADDR as string;
  const res = await fetch(`http://${registry}/v2/debian/manifests/bookworm-slim`, { headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
  expect(res.status).toBe(200);
  const manifest = (await res.json()) as { layers: unknown[] };
  expect(manifest.layers.length).toBeGreaterThan(0);
});

test('a second run takes the cached tar (no rebuild)', () => {
  const t0 = fs.statSync(process.env.FIREBUILD_TEST_BASE_TAR as string).mtimeMs;
  const tar = execFileSync('bash', ['scripts/make-base-image.sh'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  expect(tar).toBe(process.env.FIREBUILD_TEST_BASE_TAR);
  expect(fs.statSync(tar).mtimeMs).toBe(t0);
});
