import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { expectJsonResult, runCli, tempDir } from '../helpers/cli.js';
import { DOCKER } from '../helpers/trees.js';

/**
 * `FROM <short name>` in the vm engine pulls as Docker does: the name normalized (fbmirror-<pid>:1 is
 * docker.io/library/fbmirror-<pid>:1), asked of each registry mirror before docker.io. The local registry
 * stands in as the docker.io mirror; the image is pushed there under a name the host's Docker engine does
 * not have, so only the mirror can give it. docker.io itself is moved to a closed local port
 * (FIREBUILD_DOCKER_IO_REGISTRY): no test reaches the internet. No RUN: nothing boots, the base is pulled,
 * its layers applied, and the image stored.
 */
const REGISTRY = process.env.FIREBUILD_REGISTRY_ADDR ?? '127.0.0.1:5000';
const MIRROR = `http://${REGISTRY}`;
let CLOSED: string;
const NAME = `fbmirror-${process.pid}`;
const PUSHED = `${REGISTRY}/library/${NAME}:1`;
let work: string;
let env: NodeJS.ProcessEnv;

function dockerfile(name: string, text: string): string {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'Dockerfile'), text);
  return path.join(dir, 'Dockerfile');
}

const build = (file: string, tag: string, extra: string[] = [], more: NodeJS.ProcessEnv = {}): ReturnType<typeof runCli> =>
  runCli(['rootfs', '--engine', 'vm', '--dockerfile', file, '--tag', tag, ...extra], { env: { ...env, ...more } });

beforeAll(async () => {
  work = await tempDir('firebuild-pullmirror-');
  // A local port nothing listens on (fetch refuses well-known ones such as 9 outright): connecting is refused at once.
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  CLOSED = `127.0.0.1:${(probe.address() as net.AddressInfo).port}`;
  await new Promise((resolve) => probe.close(resolve));
  env = { FIREBUILD_HOME: path.join(work, 'home'), FIREBUILD_DOCKER_IO_REGISTRY: CLOSED, FIREBUILD_REGISTRY_MIRRORS: '' };
  // The offline base (scripts/make-base-image.sh) into the mirror as library/<name>; then out of the Docker engine.
  execFileSync(DOCKER, ['tag', process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim', PUSHED], { stdio: 'pipe' });
  execFileSync(DOCKER, ['push', PUSHED], { stdio: 'pipe' });
  execFileSync(DOCKER, ['rmi', PUSHED], { stdio: 'pipe' });
  for (const ref of [`${NAME}:1`, `docker.io/library/${NAME}:1`]) {
    expect(() => execFileSync(DOCKER, ['image', 'inspect', ref], { stdio: 'pipe' })).toThrow();
  }
}, 5 * 60_000);

afterAll(async () => {
  if (work) await fs.promises.rm(work, { recursive: true, force: true });
});

describe('FROM <short name> through a docker.io registry mirror (vm engine)', () => {
  test('the mirror has it: the build pulls it from the mirror (a dead mirror before it is passed over)', async () => {
    const file = dockerfile('ok', `FROM ${NAME}:1\nENV FROM_MIRROR=1\n`);
    const r = await build(file, 'fbtest/mirror:1', ['--registry-mirror', `http://${CLOSED}`, '--registry-mirror', MIRROR]);
    expectJsonResult(r);
    const out = JSON.parse(r.stdout) as { metadata: string; executed: number };
    const meta = JSON.parse(fs.readFileSync(out.metadata, 'utf8')) as { parents: string[]; config: { env: string[] } };
    // The parent is the normalized name with the digest the mirror served.
    expect(meta.parents).toEqual([expect.stringMatching(new RegExp(`^docker\\.io/library/${NAME}:1@sha256:[a-f0-9]{64}$`))]);
    expect(meta.config.env).toContain('FROM_MIRROR=1');
    expect(r.stderr).toMatch(/base found at a later registry/);
    // The same through FIREBUILD_REGISTRY_MIRRORS (comma separated), as the actions get it.
    const viaEnv = await build(file, 'fbtest/mirror:2', [], { FIREBUILD_REGISTRY_MIRRORS: `http://${CLOSED},${MIRROR}` });
    expectJsonResult(viaEnv);
  }, 5 * 60_000);

  test('no mirror: one line at the FROM line naming every place tried', async () => {
    const file = dockerfile('nomirror', `FROM ${NAME}:1\n`);
    const r = await build(file, 'fbtest/mirror:3');
    expect(r.code).not.toBe(0);
    const last = r.stderr.trim().split('\n').pop()!;
    expect(last).toContain(`Dockerfile:1: base image ${NAME}:1 not found. Tried: stored firebuild images (firebuild image ls): none named so; the Docker engine: no such image; docker.io/library/${NAME}:1 at ${CLOSED}: unreachable (`);
    expect(last).toMatch(/; no registry mirror set \(--registry-mirror, the profile's registry-mirrors or FIREBUILD_REGISTRY_MIRRORS\)$/);
  }, 2 * 60_000);

  test('an image no place has, with the mirror: one line naming the mirror and docker.io', async () => {
    const file = dockerfile('unknown', `FROM busybox:1.36\n`);
    const r = await build(file, 'fbtest/mirror:4', ['--registry-mirror', MIRROR]);
    expect(r.code).not.toBe(0);
    const last = r.stderr.trim().split('\n').pop()!;
    // Every place is named once, in the order asked.
    expect(last).toContain(`Dockerfile:1: base image busybox:1.36 not found. Tried: stored firebuild images (firebuild image ls): none named so; the Docker engine: no such image; docker.io/library/busybox:1.36 at ${MIRROR} (mirror): not found; docker.io/library/busybox:1.36 at ${CLOSED}: unreachable (`);
    expect(last).toMatch(/ECONNREFUSED/);
    const user = await build(dockerfile('unknown2', `FROM fbtest-none/${NAME}:9\n`), 'fbtest/mirror:5', ['--registry-mirror', MIRROR]);
    expect(user.stderr.trim().split('\n').pop()).toContain(`docker.io/fbtest-none/${NAME}:9 at ${MIRROR} (mirror): not found; docker.io/fbtest-none/${NAME}:9 at ${CLOSED}: unreachable`);
    // A registry named in the reference is asked directly, never the mirror.
    const direct = await build(dockerfile('direct', `FROM ${CLOSED}/team/x:1\n`), 'fbtest/mirror:6', ['--registry-mirror', MIRROR]);
    expect(direct.stderr.trim().split('\n').pop()).toMatch(new RegExp(`Tried: .*; ${CLOSED}/team/x:1 at ${CLOSED}: unreachable \\([^)]*ECONNREFUSED[^)]*\\)$`));
    expect(direct.stderr).not.toContain('(mirror)');
  }, 2 * 60_000);

  test('a malformed mirror: one line, before anything is pulled', async () => {
    const r = await build(dockerfile('bad', `FROM ${NAME}:1\n`), 'fbtest/mirror:7', ['--registry-mirror', '127.0.0.1:5000']);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/malformed registry mirror '127\.0\.0\.1:5000' \(--registry-mirror\): give http\(s\):\/\/host\[:port\]/)]);
  });
});
