import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, expectJsonResult, runCli, tempDir } from '../helpers/cli.js';
import { throttledProxy, type Throttled } from '../helpers/servers.js';
import { importTestKernel, killAll, killVmmProcessesUnder, vmmProcessesUnder } from '../helpers/vm.js';
import { annotations, cancelAsRunner, runnerFiles, runPost, startAction, type ActionRun } from '../helpers/runner.js';

/**
 * A cancelled job, as the runner cancels it: SIGINT to the step, SIGTERM 7.5 s later, SIGKILL 2.5 s after
 * that; then the post steps run (with the main step's STATE_*). The bundled actions (dist/) must leave
 * nothing on the host, whatever phase the cancel lands in: no VMM process, no run cache entry, no cgroup, no
 * network namespace, no firebuild work or temp directory, no half-written image in the store's staging
 * area, no tag, no pushed manifest. A main step killed outright (SIGKILL, no handler runs) leaves its VMs
 * and work directories to the post step, which finds them in the step's state.
 *
 * The slow phases are made slow on purpose, so the cancel lands in them every time: the registry
 * (127.0.0.1:5000) and the Docker engine are reached through throttling proxies.
 */
let work: string;
let env: NodeJS.ProcessEnv;
/** The registry at about 2 MiB/s each way (pulls of FROM images, pushes of publish). */
let registry: Throttled;
/** The Docker engine's API at about 4 MiB/s (the export of a docker-image being converted). */
let docker: Throttled;
const REGISTRY = process.env.FIREBUILD_REGISTRY_ADDR ?? '127.0.0.1:5000';
const BASE = 'fbtest/cancelbase:1';
/** An image whose command never ends (CMD sleep 600): its VM runs until something stops it. */
const SLEEPER = 'fbtest/sleeper:1';
const runCache = (): string => path.join(work, 'home', 'run');
/** The file's own TMPDIR: the build's work directory is made there. */
const buildTmp = (): string => path.join(work, 'tmp');
const listing = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir) : []);
/** The store's staging area: an image being written (a cancelled write leaves nothing here). */
const staging = (): string => path.join(work, 'home', 'rootfs', '.staging');

const vmmProcesses = (): number[] => vmmProcessesUnder(work);

/** The cgroups of these VM ids, wherever cgroup2 is mounted. */
function cgroups(ids: string[]): string[] {
  const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')).filter((f) => f[2] === 'cgroup2').map((f) => f[1]!);
  return ids.flatMap((id) => mounts.map((m) => path.join(m, 'firebuild', id))).filter((d) => fs.existsSync(d));
}

/** The network namespaces firebuild would have made for these VM ids (`fb-<id>`, net/host.ts). */
function netns(ids: string[]): string[] {
  return listing('/run/netns').filter((n) => ids.some((id) => n === `fb-${id}`));
}

async function until(what: string, cond: () => boolean, ended: () => boolean, output: () => string): Promise<void> {
  while (!cond()) {
    if (ended()) throw new Error(`the step ended before ${what}:\n${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** What a cancelled step may have left, by kind: each list must be empty. */
async function leftovers(ids: string[], tag?: string): Promise<Record<string, unknown[]>> {
  const tags = tag ? (JSON.parse((await runCli(['image', 'ls', '--json'], { env })).stdout) as { tag: string }[]).filter((t) => t.tag === tag) : [];
  return {
    vmm: vmmProcesses(), runCache: listing(runCache()), cgroups: cgroups(ids), netns: netns(ids),
    tmp: listing(buildTmp()).filter((n) => n.startsWith('firebuild-')), staging: listing(staging()), tag: tags,
  };
}
const NOTHING = { vmm: [], runCache: [], cgroups: [], netns: [], tmp: [], staging: [], tag: [] };

/** The main step ended on the first signal (130), its record of what it owns is empty, and its post step (if any) is quiet. */
async function cancelledCleanly(main: { child: import('node:child_process').ChildProcess; done: Promise<ActionRun> }, post?: string): Promise<ActionRun> {
  const sent = await cancelAsRunner(main);
  const r = await main.done;
  expect({ sent, code: r.code }).toEqual({ sent: ['SIGINT'], code: 130 });
  // A cancel is not a failure to annotate: the runner shows the cancel itself.
  expect(annotations(r.stdout)).toEqual([]);
  if (r.state.owned !== undefined) expect(JSON.parse(r.state.owned)).toEqual([]);
  if (post) {
    const p = await runPost(post, r.state, env);
    expect({ code: p.code, errors: annotations(p.stdout), warnings: annotations(p.stdout, 'warning') }).toEqual({ code: 0, errors: [], warnings: [] });
  }
  return r;
}

beforeAll(async () => {
  work = await tempDir('firebuild-actcancel-');
  fs.mkdirSync(buildTmp());
  env = { FIREBUILD_HOME: path.join(work, 'home'), TMPDIR: buildTmp() };
  expect(await importTestKernel(env)).toBe(0);
  // The base (no RUN: nothing boots here), and the image smoke-test boots.
  const base = path.join(work, 'base');
  fs.mkdirSync(base);
  fs.writeFileSync(path.join(base, 'Dockerfile'), `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\n`);
  expectJsonResult(await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(base, 'Dockerfile'), '--tag', BASE, '--free-space', '32M'], { env }));
  fs.writeFileSync(path.join(base, 'Dockerfile.sleeper'), `FROM ${BASE}\nCMD ["sleep", "600"]\n`);
  expectJsonResult(await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(base, 'Dockerfile.sleeper'), '--tag', SLEEPER, '--free-space', '32M'], { env }));
  registry = await throttledProxy({ host: '127.0.0.1', port: Number(REGISTRY.split(':')[1]) }, { bytesPerSecond: 2 << 20 });
  const engine = (process.env.DOCKER_HOST ?? '').replace(/^unix:\/\//, '') || '/var/run/docker.sock';
  docker = await throttledProxy({ path: engine }, { bytesPerSecond: 4 << 20, listen: path.join(work, 'docker.sock') });
}, 10 * 60_000);

afterAll(async () => {
  killVmmProcessesUnder(work);
  await killAll(runCache(), env);
  await registry?.close();
  await docker?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

const ended = (main: { child: import('node:child_process').ChildProcess }) => (): boolean => main.child.exitCode !== null || main.child.signalCode !== null;

describe('a job cancelled as the runner cancels it leaves nothing', () => {
  test('smoke-test, cancelled mid-boot, then its post step', async () => {
    const files = await runnerFiles();
    const main = startAction('smoke-test/index.js', { tag: SLEEPER, network: 'none', 'expect-exit-code': '0', timeout: '600' }, files, env);
    await until('it saved the VM id', () => fs.readFileSync(files.state, 'utf8').includes('vmm-id'), ended(main), main.output);
    // The first signal is enough: the step tears its VM down and exits 130.
    const r = await cancelledCleanly(main, 'smoke-test/post/index.js');
    const id = r.state['vmm-id']!;
    expect(id).toMatch(/^[a-z0-9]{20}$/);
    expect(await leftovers([id])).toEqual(NOTHING);
  }, 5 * 60_000);

  test('smoke-test, cancelled while its probes run, then its post step', async () => {
    const files = await runnerFiles();
    // The VM is up and its command never exits: the exit-code probe waits until the cancel.
    const main = startAction('smoke-test/index.js', { tag: SLEEPER, network: 'none', 'expect-exit-code': '0', timeout: '600' }, files, env);
    await until('its probes ran', () => main.output().includes('::group::Probes'), ended(main), main.output);
    const ids = listing(runCache());
    expect({ vms: ids.length, vmm: vmmProcesses().length }).toEqual({ vms: 1, vmm: 1 });
    const r = await cancelledCleanly(main, 'smoke-test/post/index.js');
    expect(r.state['vmm-id']).toBe(ids[0]);
    expect(await leftovers(ids)).toEqual(NOTHING);
  }, 5 * 60_000);

  test('build-rootfs (engine vm), cancelled while its FROM image is pulled from a registry and converted', async () => {
    const dir = path.join(work, 'ctx-pull');
    fs.mkdirSync(dir, { recursive: true });
    // Through the throttling proxy: the 40 MiB layer takes about 20 s, the cancel lands a few MiB in.
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM 127.0.0.1:${registry.port}/debian:bookworm-slim\nRUN true\n`);
    const files = await runnerFiles();
    const from = registry.bytes.down;
    const main = startAction('build-rootfs/index.js', { dockerfile: path.join(dir, 'Dockerfile'), tag: 'fbtest/cancelpull:1', engine: 'vm', pull: 'true', 'step-cache': 'false' }, files, env);
    await until('the layer is part-way down', () => registry.bytes.down - from > 3 << 20, ended(main), main.output);
    // The test sees what it asserts on: the pull goes into the build's work directory; no VM yet.
    expect({ work: listing(buildTmp()).filter((n) => n.startsWith('firebuild-vmbuild-')).length, vms: listing(runCache()) }).toEqual({ work: 1, vms: [] });
    await cancelledCleanly(main, 'build-rootfs/post/index.js');
    expect(await leftovers([], 'fbtest/cancelpull:1')).toEqual(NOTHING);
  }, 5 * 60_000);

  test('build-rootfs (engine vm), cancelled while a RUN runs, then its post step', async () => {
    const dir = path.join(work, 'ctx');
    fs.mkdirSync(dir, { recursive: true });
    // The marker is computed by the shell: the step's own log line (its instruction) does not contain it.
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE}\nRUN echo "marker-$((40 + 2))" && sleep 600\n`);
    const files = await runnerFiles();
    const main = startAction('build-rootfs/index.js', { dockerfile: path.join(dir, 'Dockerfile'), tag: 'fbtest/cancelled:1', engine: 'vm', 'step-cache': 'false' }, files, env);
    await until('its RUN ran', () => main.output().includes('marker-42'), ended(main), main.output);
    const ids = listing(runCache());
    // The test sees what it asserts on: the RUN's VM runs, registered, with its work directory.
    expect({ vms: ids.length, vmm: vmmProcesses().length > 0, work: listing(buildTmp()).some((n) => n.startsWith('firebuild-vmbuild-')) }).toEqual({ vms: 1, vmm: true, work: true });
    await cancelledCleanly(main, 'build-rootfs/post/index.js');
    expect(await leftovers(ids, 'fbtest/cancelled:1')).toEqual(NOTHING);
  }, 10 * 60_000);

  test('build-rootfs (docker-image), cancelled while the image is converted into ext4', async () => {
    const files = await runnerFiles();
    const [from, heads] = [docker.bytes.down, docker.heads.length];
    // The engine's API through the throttling proxy: the export of the image streams at about 4 MiB/s.
    const main = startAction('build-rootfs/index.js', { 'docker-image': process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim', tag: 'fbtest/cancelconv:1', engine: 'docker' }, files, { ...env, DOCKER_HOST: `unix://${path.join(work, 'docker.sock')}` });
    await until('the conversion is under way', () => main.output().includes('converting to ext4') && docker.bytes.down - from > 8 << 20, ended(main), main.output);
    // The container the export reads (docker-engine.ts exportImage), by the id the engine answered with.
    const containers = [...new Set(docker.heads.slice(heads).flatMap((h) => [...h.matchAll(/"Id":"([0-9a-f]{64})"/g)].map((m) => m[1]!)))];
    expect({ containers: containers.length, staging: listing(staging()).length > 0 }).toEqual({ containers: 1, staging: true });
    await cancelledCleanly(main, 'build-rootfs/post/index.js');
    const still = execFileSync('docker', ['ps', '-aq', '--no-trunc', '--filter', `id=${containers[0]}`], { encoding: 'utf8' }).trim();
    expect({ ...(await leftovers([], 'fbtest/cancelconv:1')), container: still ? [still] : [] }).toEqual({ ...NOTHING, container: [] });
  }, 5 * 60_000);

  test('build-rootfs (engine vm), its main step SIGKILLed mid-RUN: the post step alone removes the VM and the work directory', async () => {
    const dir = path.join(work, 'ctx-kill');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE}\nRUN echo "killed-$((40 + 2))" && sleep 600\n`);
    const files = await runnerFiles();
    const main = startAction('build-rootfs/index.js', { dockerfile: path.join(dir, 'Dockerfile'), tag: 'fbtest/killed:1', engine: 'vm', 'step-cache': 'false' }, files, env);
    await until('its RUN ran', () => main.output().includes('killed-42'), ended(main), main.output);
    const ids = listing(runCache());
    main.child.kill('SIGKILL');
    const r = await main.done;
    // No handler ran: the VM runs on, its work directory is there, and the step's state names both.
    const workDirs = listing(buildTmp()).filter((n) => n.startsWith('firebuild-vmbuild-'));
    expect({ vms: ids.length, vmm: vmmProcesses().length > 0, runCache: listing(runCache()), work: workDirs.length }).toEqual({ vms: 1, vmm: true, runCache: ids, work: 1 });
    expect(JSON.parse(r.state.owned ?? '[]')).toEqual(expect.arrayContaining([{ kind: 'vm', id: ids[0] }, { kind: 'dir', path: path.join(buildTmp(), workDirs[0]!) }]));
    const post = await runPost('build-rootfs/post/index.js', r.state, env);
    expect({ code: post.code, errors: annotations(post.stdout) }).toEqual({ code: 0, errors: [] });
    expect(post.stdout).toContain(`VM ${ids[0]} removed`);
    expect(await leftovers(ids, 'fbtest/killed:1')).toEqual(NOTHING);
  }, 10 * 60_000);

  test('publish, cancelled while it pushes to the registry: no manifest, no tag, no temp directory', async () => {
    const repo = `fbtest/cancelpub-${process.pid}`;
    const files = await runnerFiles();
    const from = registry.bytes.up;
    const main = startAction('publish/index.js', { tag: SLEEPER, 'oci-ref': `127.0.0.1:${registry.port}/${repo}:1` }, files, env);
    await until('the rootfs is part-way up', () => registry.bytes.up - from > 3 << 20, ended(main), main.output);
    expect(listing(buildTmp()).filter((n) => n.startsWith('firebuild-push-')).length).toBe(1);
    await cancelledCleanly(main);
    // Straight to the registry: the reference names no manifest, the repository no tag.
    const manifest = await fetch(`http://${REGISTRY}/v2/${repo}/manifests/1`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const tags = await fetch(`http://${REGISTRY}/v2/${repo}/tags/list`);
    const tagList = tags.ok ? ((await tags.json()) as { tags?: string[] | null }).tags ?? [] : [];
    expect({ manifest: manifest.status, tags: tagList, left: await leftovers([]) }).toEqual({ manifest: 404, tags: [], left: NOTHING });
  }, 5 * 60_000);
});

/** The CLI (bin/firebuild.js, which installs the same handlers), started in the background. */
function startCli(args: string[], extraEnv: NodeJS.ProcessEnv = {}): { child: import('node:child_process').ChildProcess; exit: Promise<number | null>; output: () => string } {
  const child = spawn(BIN, args, { env: { ...process.env, ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, exit, output: () => out };
}

describe('the CLI paths that start no VM, cancelled with SIGTERM, leave nothing', () => {
  test('rootfs --docker-image, mid-conversion: exit 143, no staging directory, no tag, no export container', async () => {
    const [from, heads] = [docker.bytes.down, docker.heads.length];
    const cli = startCli(['rootfs', '--docker-image', process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim', '--tag', 'fbtest/cliconv:1'], { DOCKER_HOST: `unix://${path.join(work, 'docker.sock')}` });
    await until('the conversion is under way', () => cli.output().includes('converting to ext4') && docker.bytes.down - from > 8 << 20, ended(cli), cli.output);
    const containers = [...new Set(docker.heads.slice(heads).flatMap((h) => [...h.matchAll(/"Id":"([0-9a-f]{64})"/g)].map((m) => m[1]!)))];
    expect({ containers: containers.length, staging: listing(staging()).length > 0 }).toEqual({ containers: 1, staging: true });
    cli.child.kill('SIGTERM');
    expect(await cli.exit).toBe(143);
    const still = execFileSync('docker', ['ps', '-aq', '--no-trunc', '--filter', `id=${containers[0]}`], { encoding: 'utf8' }).trim();
    expect({ ...(await leftovers([], 'fbtest/cliconv:1')), container: still ? [still] : [] }).toEqual({ ...NOTHING, container: [] });
  }, 5 * 60_000);

  test('image push, mid-upload: exit 143, no manifest, no temp directory', async () => {
    const repo = `fbtest/clipush-${process.pid}`;
    const from = registry.bytes.up;
    const cli = startCli(['image', 'push', SLEEPER, `127.0.0.1:${registry.port}/${repo}:1`]);
    await until('the rootfs is part-way up', () => registry.bytes.up - from > 3 << 20, ended(cli), cli.output);
    cli.child.kill('SIGTERM');
    expect(await cli.exit).toBe(143);
    const manifest = await fetch(`http://${REGISTRY}/v2/${repo}/manifests/1`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    expect({ manifest: manifest.status, left: await leftovers([]) }).toEqual({ manifest: 404, left: NOTHING });
  }, 5 * 60_000);
});
