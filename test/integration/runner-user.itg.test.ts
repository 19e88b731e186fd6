import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO, runCli, tempDir } from '../helpers/cli.js';
import { annotations, runnerFiles, startAction, type ActionRun } from '../helpers/runner.js';
import { factsOf, summaryTables } from '../helpers/summary-render.js';
import { DOCKER } from '../helpers/trees.js';
import { freePort, killVmmProcessesUnder, testKernel, vmmProcessesUnder } from '../helpers/vm.js';

/**
 * Issue 15's must-show: the actions run as a GitHub runner's own unprivileged user. A user made here
 * (`useradd`, a temp home, in group kvm) makes a fresh `git clone` of this repository's committed HEAD
 * in its home, then runs the shipped bundles from the clone's dist/ as the runner would (INPUT_*,
 * GITHUB_OUTPUT, ...; the variables one step exports reach the next): setup (accel tcg, backend qemu, the
 * suite's kernel), build-rootfs (engine vm, one RUN, FROM a Docker Hub short name served by the local
 * registry standing in as the docker.io mirror: the user has no Docker access), smoke-test (boot, HTTP
 * probe through a published port, the post step) and publish (to the local registry). The store and the
 * profile must live under the user's home, nothing in it may be root's, and no VM, QEMU or work dir may
 * be left. Root-only parts (the jailer, CNI) and Docker fail with one annotation naming runner-setup.
 *
 * The clone's dist/ is what is committed. To run this against a dist built from an uncommitted src/
 * (`npm run bundle`), set FIREBUILD_TEST_RUNNER_DIST=<that dist dir>: it is copied over the clone's, as
 * the user. A later beforeAll may run runner-setup/setup.sh from the clone to install firebuild for the
 * user before the steps; the steps only need `user`, `clone` and `kernel`.
 */
const REGISTRY = process.env.FIREBUILD_REGISTRY_ADDR ?? '127.0.0.1:5000';
const BASE = `fbrunner-${process.pid}`;
const NAME = `fbrun${process.pid}`;
const UNABLE = process.getuid?.() !== 0 ? 'the test runs as root to create its user' : !fs.existsSync('/usr/sbin/useradd') ? 'useradd is not installed' : '';
if (UNABLE) process.stderr.write(`runner-user.itg.test.ts skipped: ${UNABLE}\n`);

interface RunnerUser { name: string; uid: number; gid: number; home: string }
let user: RunnerUser;
let work: string;
let clone: string;
let kernel: string;
let closed: string;
/** The `firebuild` wrapper runner-setup installed (root-owned, run by the user). */
let firebuildBin: string;
let createdKvmGroup = false;
/** The steps' runner directories (the runner's, handed to the user): not leftovers of the steps. */
const runnerDirs = new Set<string>();

/** argv prefix that runs a command as the user with its groups (kvm), as the runner's service does. */
const asUser = (): string[] => ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', '--'];

/** The runner's environment for the user: none of root's variables (no FIREBUILD_HOME, no XDG_* of root's). */
function userEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.keys(process.env).map((k) => [k, undefined]));
  for (const k of ['PATH', 'LANG', 'TZ']) if (process.env[k]) env[k] = process.env[k];
  return { ...env, HOME: user.home, USER: user.name, LOGNAME: user.name, RUNNER_ENVIRONMENT: 'self-hosted', ...extra };
}

/** The job's environment: docker.io through the local registry (its mirror), the real docker.io a closed port. */
const jobEnv = (): NodeJS.ProcessEnv => userEnv({ FIREBUILD_REGISTRY_MIRRORS: `http://${REGISTRY}`, FIREBUILD_DOCKER_IO_REGISTRY: closed });

function runAsUser(cmd: string, args: string[], env: NodeJS.ProcessEnv = userEnv()): string {
  const [setpriv, ...pre] = asUser();
  return execFileSync(setpriv!, [...pre, cmd, ...args], { cwd: user.home, env: { ...process.env, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A file of the user's (written, then handed over: the test's own files must not count as root's). */
function writeAsUser(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  for (let p = file; p.startsWith(user.home + path.sep); p = path.dirname(p)) fs.chownSync(p, user.uid, user.gid);
}

/** One step of the job: a bundle of the clone's dist/, run as the user with its own runner files. */
async function step(entry: string, inputs: Record<string, string>, env: NodeJS.ProcessEnv): Promise<ActionRun & { runnerTemp: string }> {
  const files = await runnerFiles();
  runnerDirs.add(files.dir);
  for (const p of [files.dir, files.output, files.summary, files.state, files.env, files.path]) fs.chownSync(p, user.uid, user.gid);
  const run = await startAction(path.join(clone, 'dist', entry), inputs, files, env, [...asUser(), process.execPath]).done;
  return { ...run, runnerTemp: files.dir };
}

/** Paths under `dir` (relative) whose owner is not `uid`. */
function notOwnedBy(dir: string, uid: number): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (fs.lstatSync(p).uid !== uid) out.push(path.relative(dir, p));
      if (e.isDirectory()) walk(p);
    }
  };
  if (fs.lstatSync(dir).uid !== uid) out.push('.');
  walk(dir);
  return out;
}

/** Everything but directories under `dir` (a work dir's leftovers). */
function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true, withFileTypes: true }) as fs.Dirent[]).filter((e) => !e.isDirectory()).map((e) => path.join(e.parentPath ?? e.path, e.name));
}

/** The user's live processes (zombies waiting for init to reap them aside): pid and command line. */
function processesOf(uid: number): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      if (Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) !== uid || /^State:\s+Z/m.test(status)) continue;
      out.push(`${pid} ${fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim()}`);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** What the user owns in the temp directory, the runner directories aside: only its private `firebuild-<uid>`, holding no file. */
function tmpLeftovers(base: string): string[] {
  const mine = fs.readdirSync(base).filter((n) => !runnerDirs.has(path.join(base, n)) && fs.lstatSync(path.join(base, n), { throwIfNoEntry: false })?.uid === user.uid);
  return [...mine.filter((n) => n !== `firebuild-${user.uid}`), ...filesUnder(path.join(base, `firebuild-${user.uid}`))];
}

const describeIf = UNABLE ? describe.skip : describe;

describeIf('the actions run as a non-root runner user from a fresh clone', () => {
  beforeAll(async () => {
    work = await tempDir('firebuild-runneruser-');
    fs.chmodSync(work, 0o755);
    // The user: in group kvm (made when the host lacks it, as runner-setup does), a home of its own.
    if (spawnCode('getent', ['group', 'kvm']) !== 0) {
      execFileSync('groupadd', ['--system', 'kvm']);
      createdKvmGroup = true;
    }
    const home = path.join(work, 'home');
    execFileSync('useradd', ['--create-home', '--home-dir', home, '--user-group', '--groups', 'kvm', '--shell', '/bin/sh', NAME], { stdio: 'pipe' });
    const id = (flag: string): number => Number(execFileSync('id', [flag, NAME], { encoding: 'utf8' }).trim());
    user = { name: NAME, uid: id('-u'), gid: id('-g'), home };
    expect(execFileSync('id', ['-nG', NAME], { encoding: 'utf8' }).split(/\s+/)).toContain('kvm');

    // The fresh clone, made by the user: the repository is root's, so git's ownership check is waived for
    // this one clone through a config file outside the home (nothing written to the user's ~/.gitconfig).
    const gitConfig = path.join(work, 'gitconfig');
    fs.writeFileSync(gitConfig, '[safe]\n\tdirectory = *\n', { mode: 0o644 });
    clone = path.join(home, 'firebuild');
    runAsUser('git', ['clone', '--quiet', '--no-hardlinks', REPO, clone], userEnv({ GIT_CONFIG_GLOBAL: gitConfig }));
    expect(fs.existsSync(path.join(clone, 'dist', 'setup', 'index.js'))).toBe(true);
    const dist = process.env.FIREBUILD_TEST_RUNNER_DIST;
    if (dist) {
      runAsUser('rm', ['-rf', path.join(clone, 'dist')]);
      runAsUser('cp', ['-r', path.resolve(dist), path.join(clone, 'dist')]);
    }

    // runner-setup from the fresh clone, as the host's root does it: firebuild installed for the user
    // (`npm ci` + build into a root-owned /opt/firebuild) and the `firebuild` wrapper on PATH. Under a temp
    // root holding the host's account files (the user exists there), with --allow-tcg (no usable KVM here);
    // packages, the kernel build and GitHub's registration are not this test's.
    const root = path.join(work, 'root');
    fs.mkdirSync(path.join(root, 'etc'), { recursive: true, mode: 0o755 });
    for (const f of ['passwd', 'group', 'shadow', 'gshadow', 'os-release']) if (fs.existsSync(`/etc/${f}`)) fs.copyFileSync(`/etc/${f}`, path.join(root, 'etc', f));
    const rs = spawnSync('bash', [path.join(clone, 'runner-setup', 'setup.sh'), '--root', root, '--allow-tcg', '--skip-packages', '--skip-kernel', '--skip-runner', '--runner-user', NAME], { env: { ...process.env, GIT_CONFIG_GLOBAL: gitConfig }, encoding: 'utf8' });
    expect({ code: rs.status, out: rs.status === 0 ? '' : rs.stdout + rs.stderr }).toEqual({ code: 0, out: '' });
    expect(rs.stdout).toMatch(/^changed: firebuild from .* in .*\/opt\/firebuild$/m);
    expect(rs.stdout).toMatch(/^ok: user fbrun\d+ \(groups [^)]*kvm[^)]*\)$/m);
    firebuildBin = path.join(root, 'usr', 'local', 'bin', 'firebuild');
    expect(runAsUser(firebuildBin, ['--version']).trim()).toMatch(/^\d+\.\d+\.\d+/);

    // The suite's kernel, readable by the user (the cache that holds it is root's).
    kernel = path.join(work, 'kernel', 'vmlinux');
    fs.mkdirSync(path.dirname(kernel), { mode: 0o755 });
    fs.copyFileSync(testKernel(), kernel);
    fs.chmodSync(kernel, 0o644);

    // The offline base into the local registry as docker.io's library/<name>; docker.io itself is a closed port.
    execFileSync(DOCKER, ['tag', process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim', `${REGISTRY}/library/${BASE}:1`], { stdio: 'pipe' });
    execFileSync(DOCKER, ['push', `${REGISTRY}/library/${BASE}:1`], { stdio: 'pipe' });
    execFileSync(DOCKER, ['rmi', `${REGISTRY}/library/${BASE}:1`], { stdio: 'pipe' });
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    closed = `127.0.0.1:${(probe.address() as net.AddressInfo).port}`;
    await new Promise((resolve) => probe.close(resolve));
  }, 10 * 60_000);

  afterAll(() => {
    if (user) {
      killVmmProcessesUnder(user.home);
      spawnCode('userdel', ['--force', user.name]);
      // Its private temp directory too: a later user given the same uid must not inherit it.
      fs.rmSync(path.join(os.tmpdir(), `firebuild-${user.uid}`), { recursive: true, force: true });
    }
    if (createdKvmGroup) spawnCode('groupdel', ['kvm']);
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  test('setup, build-rootfs (vm engine), smoke-test (and its post step) and publish succeed; store and profile in the home, all the user\'s, nothing left running', async () => {
    const store = path.join(user.home, '.local', 'share', 'firebuild');
    const profiles = path.join(user.home, '.config', 'firebuild', 'profiles');

    const setup = await step('setup/index.js', { accel: 'tcg', backend: 'qemu', 'kernel-path': kernel }, jobEnv());
    expect({ code: setup.code, errors: annotations(setup.stdout) }).toEqual({ code: 0, errors: [] });
    expect(setup.outputs).toMatchObject({ backend: 'qemu', vmm: 'qemu', kvm: 'false', profile: 'ci', 'vmlinux-id': 'default', 'kernel-id': 'default', 'kernel-source': 'imported' });
    expect(setup.exported).toEqual({ FIREBUILD_PROFILE: 'ci', FIREBUILD_PROFILE_CONF_DIR: profiles, FIREBUILD_ACCEL: 'tcg' });
    const profileFile = path.join(profiles, 'ci.json');
    expect(fs.statSync(profileFile).mode & 0o777).toBe(0o600);
    expect(JSON.parse(fs.readFileSync(profileFile, 'utf8'))).toMatchObject({ 'run-cache': path.join(store, 'run'), 'storage-provider-property-string': { 'rootfs-storage-root': path.join(store, 'rootfs'), 'kernel-storage-root': path.join(store, 'kernels') } });
    const env = { ...jobEnv(), ...setup.exported };

    const dockerfile = path.join(user.home, 'work', 'app', 'Dockerfile');
    writeAsUser(dockerfile, [
      `FROM ${BASE}:1`,
      'RUN mkdir -p /www && echo "built-in-vm-as-$(id -u)" > /www/index.html',
      'EXPOSE 8080',
      'CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]',
      '',
    ].join('\n'));
    const build = await step('build-rootfs/index.js', { dockerfile, tag: 'runner/app:1', engine: 'vm', 'free-space': '32M' }, env);
    expect({ code: build.code, errors: annotations(build.stdout) }).toEqual({ code: 0, errors: [] });
    expect(build.outputs).toMatchObject({ tag: 'runner/app:1', sha256: expect.stringMatching(/^[0-9a-f]{64}$/), rootfs: expect.stringMatching(new RegExp(`^${store}/rootfs/`)) });
    expect(factsOf(summaryTables(build.summary)[0]!)).toMatchObject({ steps: '1 run, 0 from the cache' });
    expect(filesUnder(path.join(build.runnerTemp, `firebuild-${user.uid}`))).toEqual([]);

    const port = await freePort();
    const url = `http://127.0.0.1:${port}/`;
    const smoke = await step('smoke-test/index.js', { tag: 'runner/app:1', ports: `127.0.0.1:${port}:8080`, 'wait-http': url, 'wait-http-body': 'built-in-vm-as-0' }, env);
    expect({ code: smoke.code, errors: annotations(smoke.stdout) }).toEqual({ code: 0, errors: [] });
    expect(smoke.outputs).toMatchObject({ 'vmm-id': expect.stringMatching(/^[a-z0-9]{20}$/), 'ip-address': '', 'serial-log': expect.stringMatching(new RegExp(`^${store}/run/`)) });
    // The VM serves a later step of the job (here: this test) until the post step.
    expect((await (await fetch(url)).text()).trim()).toBe('built-in-vm-as-0');
    expect(vmmProcessesUnder(user.home)).toHaveLength(1);
    const post = await step('smoke-test/post/index.js', {}, { ...env, [`STATE_vmm-id`]: smoke.state['vmm-id']! });
    expect({ code: post.code, errors: annotations(post.stdout) }).toEqual({ code: 0, errors: [] });

    const ref = `${REGISTRY}/fbtest/runner-user-${process.pid}:1`;
    const pub = await step('publish/index.js', { tag: 'runner/app:1', 'oci-ref': ref }, env);
    expect({ code: pub.code, errors: annotations(pub.stdout) }).toEqual({ code: 0, errors: [] });
    expect(pub.outputs).toMatchObject({ digest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/), sha256: build.outputs.sha256 });
    const pulled = await runCli(['image', 'pull', ref], { env: { FIREBUILD_HOME: path.join(work, 'pulled') } });
    expect(pulled.code).toBe(0);
    expect(JSON.parse(pulled.stdout)).toMatchObject({ tag: 'runner/app:1', sha256: build.outputs.sha256 });

    // The installed CLI, run by the user, sees the job's image in the user's store.
    const ls = JSON.parse(runAsUser(firebuildBin, ['image', 'ls', '--json'], env)) as { tag: string }[];
    expect(ls.map((i) => i.tag)).toContain('runner/app:1');

    // Nothing of root's in the home; no VM, QEMU, process or work dir of the user's left.
    expect(notOwnedBy(user.home, user.uid)).toEqual([]);
    expect(fs.readdirSync(path.join(store, 'run'))).toEqual([]);
    expect(vmmProcessesUnder(user.home)).toEqual([]);
    expect(processesOf(user.uid)).toEqual([]);
    expect(tmpLeftovers(os.tmpdir())).toEqual([]);
  });

  test('root-only parts and Docker, asked for by the user: one annotation naming runner-setup each, nothing left', async () => {
    // The jailer: setup with vmm firecracker; the profile an earlier setup wrote stays as it was.
    const profileFile = path.join(user.home, '.config', 'firebuild', 'profiles', 'ci.json');
    const profileBefore = fs.existsSync(profileFile) ? fs.readFileSync(profileFile, 'utf8') : undefined;
    const fc = await step('setup/index.js', { backend: 'firecracker', 'kernel-path': kernel }, jobEnv());
    expect(fc.code).toBe(1);
    expect(annotations(fc.stdout)).toEqual([expect.stringMatching(/^::error::backend 'firecracker' \(its jailer\) needs root, and this runs as user fbrun\d+ \(uid \d+\) without firebuild's privileged helper: run runner-setup\/setup\.sh --privileged-vms on the host .*, or set backend: qemu$/)]);
    expect(fc.exported).toEqual({});
    expect(fs.existsSync(profileFile) ? fs.readFileSync(profileFile, 'utf8') : undefined).toBe(profileBefore);

    // CNI: a build whose RUN would boot on a CNI network.
    const dockerfile = path.join(user.home, 'work', 'cni', 'Dockerfile');
    writeAsUser(dockerfile, `FROM ${BASE}:1\nRUN echo cni-${process.pid}\n`);
    const cni = await step('build-rootfs/index.js', { dockerfile, tag: 'runner/cni:1', 'cni-network': 'machine-builds' }, jobEnv());
    expect(cni.code).toBe(1);
    expect(annotations(cni.stdout)).toEqual([expect.stringMatching(/^::error[^:]*::a CNI network \(network namespaces, taps, iptables\) needs root, .*runner-setup\/setup\.sh --privileged-vms.*, or use user-mode networking \(network user\)$/)]);
    expect(filesUnder(path.join(cni.runnerTemp, `firebuild-${user.uid}`))).toEqual([]);

    // Docker: the engine's socket is root's (docker group membership is root-equivalent, granted only on purpose).
    const docker = await step('build-rootfs/index.js', { dockerfile, tag: 'runner/docker:1', engine: 'docker' }, jobEnv());
    expect(docker.code).toBe(1);
    expect(annotations(docker.stdout)).toEqual([expect.stringMatching(/^::error::Docker engine not reachable \(connect EACCES [^)]*\): user fbrun\d+ \(uid \d+\) may not use the Docker engine, whose access is root-equivalent: grant it on purpose with runner-setup\/setup\.sh --with-docker, or build with engine vm/)]);

    expect(notOwnedBy(user.home, user.uid)).toEqual([]);
    const run = path.join(user.home, '.local', 'share', 'firebuild', 'run');
    expect(fs.existsSync(run) ? fs.readdirSync(run) : []).toEqual([]);
    expect(processesOf(user.uid)).toEqual([]);
    expect(tmpLeftovers(os.tmpdir())).toEqual([]);
  });
});

function spawnCode(cmd: string, args: string[]): number {
  try {
    execFileSync(cmd, args, { stdio: 'pipe' });
    return 0;
  } catch (err) {
    return (err as { status?: number }).status ?? 1;
  }
}
