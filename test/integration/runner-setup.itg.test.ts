import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO, runCommand, snapshot, tempDir } from '../helpers/cli.js';
import { serveDir, type Served } from '../helpers/servers.js';

/**
 * runner-setup/setup.sh under a temp --root, as root. The GitHub side is local: a releases API stand-in
 * and a fake actions/runner tarball served from 127.0.0.1, whose config.sh, run.sh and svc.sh record
 * their argv, environment and uid. The KVM preflight reads the paths given (this host has no /dev/kvm).
 * The real install of firebuild (npm ci + build) runs once; the hooks against a running build VM are
 * in runner-hooks.itg.test.ts.
 */
const SCRIPT = path.join(REPO, 'runner-setup', 'setup.sh');
const VERSION = '2.330.0';
let work: string;
let served: Served;
let runnerSha: string;
let fcTarball: string;
let fcSha: string;
/** A CPU with and without virtualization; a host that is itself a VM. */
let cpuVmx: string;
let cpuGuestNoVmx: string;
/** A stand-in for /dev/kvm: a real character device (10,232), group kvm, mode 660. */
let kvmDev: string;

const releaseJson = (version: string, sha: string): string => JSON.stringify({
  tag_name: `v${version}`,
  // As the real notes: one checksum per platform between markers, among other 64-hex strings.
  body: `## Changes\n- commit ${'f'.repeat(64)}\n## SHA-256 Checksums\n- actions-runner-linux-arm64-${version}.tar.gz <!-- BEGIN SHA linux-arm64 -->${'b'.repeat(64)}<!-- END SHA linux-arm64 -->\n- actions-runner-linux-x64-${version}.tar.gz <!-- BEGIN SHA linux-x64 -->${sha}<!-- END SHA linux-x64 -->\n`,
});

/** setup.sh as root, asynchronously (the stand-in servers live in this process). */
async function setup(args: string[], o: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<{ code: number; out: string; lines: string[] }> {
  const r = await runCommand('bash', [SCRIPT, ...args], {
    env: { ...process.env, RUNNER_RELEASES_API: `${served.url}/releases/latest`, RUNNER_DOWNLOAD_URL: `${served.url}/download/v{version}/actions-runner-linux-{arch}-{version}.tar.gz`, ...o.env },
    input: o.input ?? '',
  });
  const out = r.stdout + r.stderr;
  return { code: r.code, out, lines: out.split('\n').filter((l) => l) };
}

/** A root with the host's account files (useradd --prefix edits them) and an os-release. */
function makeRoot(name: string, os = 'ID=debian\nVERSION_ID="12"\n'): string {
  const root = path.join(work, name);
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  for (const f of ['passwd', 'group', 'shadow', 'gshadow']) if (fs.existsSync(`/etc/${f}`)) fs.copyFileSync(`/etc/${f}`, path.join(root, 'etc', f));
  fs.writeFileSync(path.join(root, 'etc', 'os-release'), os);
  return root;
}
const mtimes = (dir: string): string[] => snapshot(dir).concat(fs.readdirSync(dir, { recursive: true }).map((f) => `${f} ${fs.lstatSync(path.join(dir, String(f))).mtimeMs}`));
const calls = (root: string): string[] => fs.readFileSync(path.join(root, 'opt/actions-runner/calls.log'), 'utf8').split('\n').filter((l) => l);
/** The options every fast run shares: no packages, kernel or npm install; the KVM stand-ins. */
const fast = (root: string): string[] => ['--root', root, '--skip-packages', '--skip-kernel', '--skip-install', '--kvm-device', kvmDev, '--cpuinfo', cpuVmx];

beforeAll(async () => {
  work = await tempDir('firebuild-runner-setup-');
  // The runner user (a uid of the temp root's passwd) runs config.sh in here.
  fs.chmodSync(work, 0o755);
  const www = path.join(work, 'www');
  // The fake runner: each script records its name, argv, uid and ACTIONS_RUNNER_* environment.
  const rel = path.join(work, 'runner-src');
  fs.mkdirSync(path.join(rel, 'externals', 'node20', 'bin'), { recursive: true });
  const recorder = (name: string, extra = ''): string => `#!/bin/sh\nd=$(cd "$(dirname "$0")" && pwd)\n{ echo "${name} argv: $*"; echo "${name} uid: $(id -u)"; env | grep '^ACTIONS_RUNNER_INPUT_' | sed 's/^/${name} env: /'; } >> "$d/calls.log"\n${extra}`;
  fs.writeFileSync(path.join(rel, 'config.sh'), recorder('config.sh', 'touch "$d/.runner"\n'), { mode: 0o755 });
  fs.writeFileSync(path.join(rel, 'run.sh'), recorder('run.sh'), { mode: 0o755 });
  fs.writeFileSync(path.join(rel, 'svc.sh'), recorder('svc.sh'), { mode: 0o755 });
  // The runner's bundled node (externals/node20): here the test's own Node 20.
  fs.symlinkSync(process.execPath, path.join(rel, 'externals', 'node20', 'bin', 'node'));
  const dl = path.join(www, 'download', `v${VERSION}`);
  fs.mkdirSync(dl, { recursive: true });
  const tarball = path.join(dl, `actions-runner-linux-x64-${VERSION}.tar.gz`);
  spawnSync('tar', ['-czf', tarball, '-C', rel, '.']);
  runnerSha = createHash('sha256').update(fs.readFileSync(tarball)).digest('hex');
  fs.mkdirSync(path.join(www, 'releases'));
  fs.writeFileSync(path.join(www, 'releases', 'latest'), releaseJson(VERSION, runnerSha));
  fs.writeFileSync(path.join(www, 'releases', 'old'), releaseJson('2.321.0', runnerSha));
  fs.writeFileSync(path.join(www, 'releases', 'badsha'), releaseJson(VERSION, '0'.repeat(64)));
  served = await serveDir(www);

  // A Firecracker release tarball laid out as Firecracker's (release-vX-x86_64/{firecracker,jailer}-vX-x86_64).
  const fc = path.join(work, 'fc', 'release-v1.10.1-x86_64');
  fs.mkdirSync(fc, { recursive: true });
  for (const b of ['firecracker', 'jailer']) fs.writeFileSync(path.join(fc, `${b}-v1.10.1-x86_64`), `#!/bin/sh\necho ${b}\n`, { mode: 0o755 });
  fcTarball = path.join(work, 'fc.tgz');
  spawnSync('tar', ['-czf', fcTarball, '-C', path.join(work, 'fc'), '.']);
  fcSha = createHash('sha256').update(fs.readFileSync(fcTarball)).digest('hex');

  cpuVmx = path.join(work, 'cpuinfo-vmx');
  fs.writeFileSync(cpuVmx, 'processor\t: 0\nflags\t\t: fpu vme de pse tsc msr vmx sse sse2\n');
  cpuGuestNoVmx = path.join(work, 'cpuinfo-guest');
  fs.writeFileSync(cpuGuestNoVmx, 'processor\t: 0\nflags\t\t: fpu vme de pse tsc msr sse sse2 hypervisor\n');
  kvmDev = path.join(work, 'kvm');
  expect(spawnSync('mknod', [kvmDev, 'c', '10', '232']).status).toBe(0);
  fs.chmodSync(kvmDev, 0o660);
  expect(spawnSync('chgrp', ['kvm', kvmDev]).status).toBe(0);
});
afterAll(async () => {
  await served?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('runner-setup/setup.sh', () => {
  test('--dry-run names every step, resolves the latest runner from the releases API and writes nothing', async () => {
    const root = makeRoot('dry');
    const before = mtimes(root);
    const tokenFile = path.join(work, 'dry-token');
    fs.writeFileSync(tokenFile, 'dry-token-value\n', { mode: 0o600 });
    const r = await setup(['--dry-run', '--root', root, '--kvm-device', kvmDev, '--cpuinfo', cpuVmx, '--url', 'https://github.com/acme/app', '--token-file', tokenFile, '--ephemeral', '--privileged-vms']);
    expect({ code: r.code, out: r.out }).toEqual({ code: 0, out: expect.stringMatching(/runner-setup: done\n$/) });
    const steps = r.lines.filter((l) => l.startsWith('would: '));
    for (const want of [
      /packages for debian-12 x86_64: .*qemu-system-x86.*libicu72.*linux-source-6\.1.*containernetworking-plugins.*sudo/,
      /user firebuild-runner \(groups kvm, home \/home\/firebuild-runner\)/, /\.config\/firebuild\/profiles/, /\.local\/share\/firebuild/,
      new RegExp(`install actions/runner ${VERSION.replace(/\./g, '\\.')} linux-x64 \\(sha256 ${runnerSha}\\)`),
      /install firebuild from .* \(npm ci --ignore-scripts, npm run build/, /usr\/local\/bin\/firebuild$/, /kvm\.rules/,
      /firecracker and jailer v1\.10\.1/, /srv\/jailer/, /machine-builds\.conflist/, /61-machines\.conflist/, /priv\/privileged\.json/,
      /libexec\/firebuild-priv$/, /sudoers\.d\/firebuild \(NOPASSWD/, /kernel default \(Debian's linux-source-6\.1/,
      /job-started\.sh/, /job-completed\.sh/, /ACTIONS_RUNNER_HOOK_JOB_STARTED and ACTIONS_RUNNER_HOOK_JOB_COMPLETED/,
      /etc\/firebuild\/runner\/token/, /runner-ephemeral\.sh/, /firebuild-runner\.service/,
    ]) {
      expect([want.source, steps.some((s) => want.test(s))]).toEqual([want.source, true]);
    }
    // The preflight passed on the stand-in device: no warning.
    expect(r.out).toMatch(new RegExp(`^ok: ${kvmDev} \\(root:kvm 660\\)$`, 'm'));
    expect(r.out).toMatch(/^ok: cpu virtualization \(vmx\)$/m);
    expect(r.out).not.toMatch(/^(changed|warn):/m);
    expect(r.out).not.toContain('dry-token-value');
    expect(mtimes(root)).toEqual(before);
  });

  test.each([
    ['Debian 12 x86_64', 'ID=debian\nVERSION_ID="12"\n', [], /for debian-12 x86_64: .*qemu-system-x86 libicu72 libkrb5-3 zlib1g libssl3 liblttng-ust1 .*linux-source-6\.1/],
    ['Ubuntu 24.04 x86_64', 'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\nUBUNTU_CODENAME=noble\n', [], /for ubuntu-24\.04 x86_64: .*qemu-system-x86 libicu74 libkrb5-3 zlib1g libssl3t64 liblttng-ust1t64 .*linux-source-6\.8\.0/],
    ['Debian 12 aarch64', 'ID=debian\nVERSION_ID="12"\n', ['--arch', 'aarch64'], /for debian-12 aarch64: .*qemu-system-arm libicu72/],
    ['a Debian 12 derivative (ID_LIKE)', 'ID=raspbian\nID_LIKE=debian\nVERSION_ID="12"\n', ['--arch', 'aarch64'], /for debian-12 aarch64: /],
    ['Ubuntu 24.04 aarch64 with docker', 'ID=ubuntu\nVERSION_ID="24.04"\n', ['--arch', 'aarch64', '--with-docker', '--skip-kernel'], /for ubuntu-24\.04 aarch64: .*qemu-system-arm libicu74 .*liblttng-ust1t64 docker\.io$/],
  ])('--dry-run picks the package names of %s', async (_name, os, extra, want) => {
    const root = makeRoot(`os-${_name.replace(/\W+/g, '-')}`, os);
    const r = await setup(['--dry-run', '--root', root, '--kvm-device', kvmDev, '--cpuinfo', cpuVmx, '--skip-runner', ...extra]);
    expect(r.code).toBe(0);
    const line = r.lines.find((l) => l.startsWith('would: packages'));
    expect(line).toMatch(want);
    if (!extra.includes('--with-docker')) expect(line).not.toMatch(/docker/);
    if (extra.includes('--arch')) expect(line).not.toMatch(/qemu-system-x86|linux-source/);
  });

  test.each([
    ['no /dev/kvm (this host), no vmx on a cloud guest', () => ['--kvm-device', path.join(work, 'no-kvm'), '--cpuinfo', cpuGuestNoVmx],
      /^runner-setup: no usable KVM: \S+no-kvm is missing; the CPU shows no vmx\/svm flag and this host is itself a VM: enable nested virtualization .*; pass --allow-tcg/, undefined, undefined],
    ['a /dev/kvm the kvm group cannot use', () => {
      const dev = path.join(work, 'kvm-600');
      if (!fs.existsSync(dev)) spawnSync('mknod', ['-m', '600', dev, 'c', '10', '232']);
      return ['--kvm-device', dev, '--cpuinfo', cpuVmx];
    }, /^runner-setup: no usable KVM: \S+kvm-600 is root:root mode 600, not read-write for group kvm \(chgrp kvm/, undefined, undefined],
    ['--token on the command line', () => ['--token', 'ghs_secret'], /^runner-setup: --token is refused: .*use --token-file FILE or --token-file - \(stdin\)$/, undefined, undefined],
    ['a runner release below the minimum (latest from the API)', () => ['--allow-tcg'], /^runner-setup: actions\/runner 2\.321\.0 is below 2\.329\.0, the oldest GitHub registers/, `/releases/old`, undefined],
    ['--runner-version below the minimum', () => ['--allow-tcg', '--runner-version', '2.328.9', '--runner-sha256', 'a'.repeat(64)], /^runner-setup: actions\/runner 2\.328\.9 is below 2\.329\.0/, undefined, undefined],
    ['--runner-version without its sha256', () => ['--allow-tcg', '--runner-version', '2.330.0'], /^runner-setup: --runner-version needs --runner-sha256/, undefined, undefined],
    ['a releases API that does not answer', () => ['--allow-tcg'], /^runner-setup: cannot read the latest actions\/runner release from http:\/\/127\.0\.0\.1:1\/x: pass --runner-version/, 'http://127.0.0.1:1/x', undefined],
    ['an unknown OS', () => ['--allow-tcg'], /^runner-setup: unsupported OS 'fedora 40' \(from \S+\/etc\/os-release\): Debian 12 and Ubuntu 24\.04 are supported/, undefined, 'ID=fedora\nVERSION_ID=40\n'],
    ['a runner tarball whose sha256 does not match the release notes', () => ['--allow-tcg', '--skip-packages'], /^runner-setup: actions\/runner 2\.330\.0 tarball checksum mismatch: refusing it$/, '/releases/badsha', undefined],
  ] as [string, () => string[], RegExp, string | undefined, string | undefined][])('refuses %s: one line, exit 2, nothing written', async (_n, args, want, api: string | undefined, os: string | undefined) => {
    const root = makeRoot(`refuse-${_n.replace(/\W+/g, '-')}`, os);
    const before = mtimes(root);
    const tokenFile = path.join(work, 'refuse-token');
    fs.writeFileSync(tokenFile, 'tok\n');
    const env = api ? { RUNNER_RELEASES_API: api.startsWith('/') ? `${served.url}${api}` : api } : {};
    const base = ['--root', root, '--skip-kernel', '--skip-install', '--url', 'https://github.com/acme/app', '--token-file', tokenFile, '--kvm-device', kvmDev, '--cpuinfo', cpuVmx];
    const r = await setup([...base, ...args()], { env });
    // The refusal is the only line besides the steps before it (the preflight's ok lines; for a checksum
    // refusal, the steps done before the download).
    expect({ code: r.code, lines: r.lines.filter((l) => !/^(ok|changed|warn):/.test(l)) }).toEqual({ code: 2, lines: [expect.stringMatching(want)] });
    if (!/sha256 does not match/.test(_n)) expect(mtimes(root)).toEqual(before);
    expect(fs.existsSync(path.join(root, 'opt/actions-runner'))).toBe(false);
    expect(r.out).not.toContain('ghs_secret');
  });

  test('--allow-tcg proceeds without KVM with a warning', async () => {
    const root = makeRoot('tcg');
    const r = await setup(['--root', root, '--skip-packages', '--skip-kernel', '--skip-install', '--skip-runner', '--kvm-device', path.join(work, 'no-kvm'), '--cpuinfo', cpuGuestNoVmx, '--allow-tcg']);
    expect(r.code).toBe(0);
    expect(r.lines[0]).toMatch(/^warn: no usable KVM: .*no-kvm is missing; .*going on \(--allow-tcg\)/);
    expect(fs.existsSync(path.join(root, 'usr/local/bin/firebuild'))).toBe(true);
  });

  test('registration: the token from stdin reaches config.sh in its environment, never argv; the runner user is in kvm only; a second run changes nothing', async () => {
    const root = makeRoot('reg');
    const args = [...fast(root), '--url', 'https://github.com/acme/app', '--token-file', '-', '--labels', 'self-hosted,linux,kvm,firebuild'];
    const first = await setup(args, { input: 'AAAA-secret-token\n' });
    expect({ code: first.code, out: first.out }).toEqual({ code: 0, out: expect.stringMatching(/runner-setup: done/) });
    expect(first.out).toMatch(new RegExp(`^changed: actions/runner ${VERSION.replace(/\./g, '\\.')} linux-x64 in \\S+ \\(sha256 verified; auto-update on\\)$`, 'm'));
    expect(first.out).not.toContain('AAAA-secret-token');
    // The user: kvm, not docker; its uid ran config.sh.
    const passwd = fs.readFileSync(path.join(root, 'etc/passwd'), 'utf8');
    const uid = /^firebuild-runner:x:(\d+):/m.exec(passwd)?.[1];
    expect(uid).toBeDefined();
    const groupsOf = (r: string): string[] => fs.readFileSync(path.join(r, 'etc/group'), 'utf8').split('\n').filter((l) => l.split(':')[3]?.split(',').includes('firebuild-runner')).map((l) => l.split(':')[0]!);
    expect(groupsOf(root)).toEqual(['kvm']);
    const c = calls(root);
    const configArgv = c.filter((l) => l.startsWith('config.sh argv: '));
    expect(configArgv).toEqual([expect.stringMatching(/^config\.sh argv: --unattended --url https:\/\/github\.com\/acme\/app --labels self-hosted,linux,kvm,firebuild --name \S+ --replace$/)]);
    expect(c).toContain('config.sh env: ACTIONS_RUNNER_INPUT_TOKEN=AAAA-secret-token');
    expect(c).toContain(`config.sh uid: ${uid}`);
    expect(c.filter((l) => l.includes('argv')).join('\n')).not.toContain('AAAA');
    expect(c.filter((l) => l.startsWith('svc.sh argv'))).toEqual(['svc.sh argv: install firebuild-runner', 'svc.sh argv: start']);
    // No auto-update switch-off anywhere.
    expect(c.join('\n')).not.toContain('--disableupdate');
    // The hooks in the runner's .env; no sudo rule, no Firecracker, no root profile for the runner.
    const env = fs.readFileSync(path.join(root, 'opt/actions-runner/.env'), 'utf8');
    const hooks = path.join(root, 'usr/local/libexec/firebuild');
    expect(env).toContain(`ACTIONS_RUNNER_HOOK_JOB_STARTED=${hooks}/job-started.sh\n`);
    expect(env).toContain(`ACTIONS_RUNNER_HOOK_JOB_COMPLETED=${hooks}/job-completed.sh\n`);
    const completed = fs.readFileSync(path.join(hooks, 'job-completed.sh'), 'utf8');
    expect(completed).toMatch(/firebuild purge --all \|\| rc=1\n/);
    expect(completed).toMatch(/firebuild image prune --match 'pr\/\*' --keep 5 /);
    expect(completed).not.toMatch(/sudo/);
    for (const f of ['etc/sudoers.d/firebuild', 'usr/local/libexec/firebuild-priv', 'usr/local/bin/firecracker', 'etc/firebuild/profiles']) expect([f, fs.existsSync(path.join(root, f))]).toEqual([f, false]);
    // The runner user's own profiles and store, hers alone.
    for (const d of ['.config/firebuild/profiles', '.local/share/firebuild']) {
      const st = fs.statSync(path.join(root, 'home/firebuild-runner', d));
      expect([d, st.uid, (st.mode & 0o777).toString(8)]).toEqual([d, Number(uid), '700']);
    }
    // The wrapper runs firebuild.
    const v = await runCommand(path.join(root, 'usr/local/bin/firebuild'), ['--version']);
    expect({ code: v.code, stdout: v.stdout.trim() }).toEqual({ code: 0, stdout: expect.stringMatching(/^\d+\.\d+\.\d+/) });

    const before = mtimes(root);
    const second = await setup(args, { input: 'AAAA-secret-token\n' });
    expect(second.code).toBe(0);
    expect(second.lines.filter((l) => !l.startsWith('ok:'))).toEqual(['runner-setup: done']);
    expect(mtimes(root)).toEqual(before);
    expect(calls(root).filter((l) => l.startsWith('config.sh argv'))).toHaveLength(1);
  });

  test('--pool: the pool label, the marker the release workflow checks, a release hook that refuses pull-request jobs; a bad pool or a mixed label is refused', async () => {
    const bad = await setup([...fast(makeRoot('pool-bad')), '--pool', 'staging', '--skip-runner']);
    expect({ code: bad.code, out: bad.out.trim() }).toEqual({ code: 2, out: "runner-setup: unknown --pool 'staging': use pr (untrusted pull requests) or release (trusted pushes, tags and releases)" });
    const mixed = await setup([...fast(makeRoot('pool-mixed')), '--pool', 'release', '--labels', 'self-hosted,linux,kvm,firebuild-pr', '--skip-runner']);
    expect({ code: mixed.code, out: mixed.out.trim() }).toEqual({ code: 2, out: expect.stringMatching(/^runner-setup: --labels 'self-hosted,linux,kvm,firebuild-pr' has firebuild-pr or firebuild: /) });

    const root = makeRoot('pool');
    const r = await setup([...fast(root), '--pool', 'release', '--url', 'https://github.com/acme/app', '--token-file', '-'], { input: 'tok\n' });
    expect({ code: r.code, out: r.out }).toEqual({ code: 0, out: expect.stringMatching(/runner-setup: done/) });
    expect(calls(root).filter((l) => l.startsWith('config.sh argv'))).toEqual([expect.stringContaining(' --labels self-hosted,linux,kvm,firebuild-release ')]);
    expect(fs.readFileSync(path.join(root, 'etc/firebuild/pool'), 'utf8')).toBe('release\n');
    expect(fs.statSync(path.join(root, 'etc/firebuild/pool')).uid).toBe(0);
    // The generated hook, run as the runner would: a pull request's job fails with one annotation, a push's goes on.
    const hooks = path.join(root, 'usr/local/libexec/firebuild');
    const started = fs.readFileSync(path.join(hooks, 'job-started.sh'), 'utf8');
    const stub = path.join(work, 'pool-bin');
    fs.mkdirSync(stub, { recursive: true });
    fs.writeFileSync(path.join(stub, 'hook.sh'), started.replace(/^\S*firebuild (purge|image prune).*$/gm, 'true'), { mode: 0o755 });
    for (const [event, code] of [['pull_request', 1], ['pull_request_target', 1], ['push', 0], ['release', 0]] as const) {
      const h = spawnSync('bash', ['-e', path.join(stub, 'hook.sh')], { env: { PATH: process.env.PATH, GITHUB_EVENT_NAME: event }, encoding: 'utf8' });
      expect([event, h.status, h.stdout.split('\n').filter((l) => l.startsWith('::error')).length]).toEqual([event, code, code]);
    }
    expect(fs.readFileSync(path.join(hooks, 'job-completed.sh'), 'utf8')).not.toContain('GITHUB_EVENT_NAME');

    // The PR pool: its label, its marker, no refusal; without --pool the marker goes again.
    const pr = await setup([...fast(root), '--pool', 'pr', '--skip-runner']);
    expect(pr.code).toBe(0);
    expect(fs.readFileSync(path.join(root, 'etc/firebuild/pool'), 'utf8')).toBe('pr\n');
    expect(fs.readFileSync(path.join(hooks, 'job-started.sh'), 'utf8')).not.toContain('GITHUB_EVENT_NAME');
    expect((await setup([...fast(root), '--skip-runner'])).code).toBe(0);
    expect(fs.existsSync(path.join(root, 'etc/firebuild/pool'))).toBe(false);
  });

  test('--with-docker adds docker; a run without it takes docker away again', async () => {
    const root = makeRoot('docker');
    const groups = (): string => fs.readFileSync(path.join(root, 'etc/group'), 'utf8').split('\n').filter((l) => l.split(':')[3]?.split(',').includes('firebuild-runner')).map((l) => l.split(':')[0]).sort().join(',');
    expect((await setup([...fast(root), '--skip-runner', '--with-docker'])).code).toBe(0);
    expect(groups()).toBe('docker,kvm');
    const r = await setup([...fast(root), '--skip-runner']);
    expect(r.out).toMatch(/^changed: user firebuild-runner groups docker,kvm -> kvm$/m);
    expect(groups()).toBe('kvm');
  });

  test('the firebuild wrapper falls back to the runner\'s bundled node when the distro\'s is older than 20', async () => {
    const root = makeRoot('oldnode');
    const oldNode = path.join(work, 'node18');
    fs.writeFileSync(oldNode, '#!/bin/sh\necho 18\n', { mode: 0o755 });
    const tokenFile = path.join(work, 'tok-oldnode');
    fs.writeFileSync(tokenFile, 'tok\n');
    const r = await setup([...fast(root), '--url', 'https://github.com/acme/app', '--token-file', tokenFile], { env: { RUNNER_SETUP_SYSTEM_NODE: oldNode } });
    expect(r.code).toBe(0);
    const wrapper = fs.readFileSync(path.join(root, 'usr/local/bin/firebuild'), 'utf8');
    expect(wrapper).toContain(`if [ -x ${root}/opt/actions-runner/externals/node20/bin/node ]; then exec ${root}/opt/actions-runner/externals/node20/bin/node `);
    const v = await runCommand(path.join(root, 'usr/local/bin/firebuild'), ['--version']);
    expect(v.code).toBe(0);
  });

  test('--ephemeral: a unit with Restart=always registers afresh at every start with the token from a root-only file', async () => {
    const root = makeRoot('eph');
    const tokenFile = path.join(work, 'eph-token');
    fs.writeFileSync(tokenFile, 'EPH-token-1\n', { mode: 0o600 });
    const args = [...fast(root), '--url', 'https://github.com/acme/app', '--token-file', tokenFile, '--ephemeral'];
    const r = await setup(args);
    expect(r.code).toBe(0);
    const unit = fs.readFileSync(path.join(root, 'etc/systemd/system/firebuild-runner.service'), 'utf8');
    const cred = path.join(root, 'etc/firebuild/runner/token');
    expect(unit).toMatch(/^Restart=always$/m);
    expect(unit).toMatch(/^User=firebuild-runner$/m);
    expect(unit).toContain(`LoadCredential=token:${cred}\n`);
    expect(unit).toMatch(/^ExecStartPre=\S+\/job-completed\.sh$/m);
    expect(fs.readFileSync(cred, 'utf8')).toBe('EPH-token-1\n');
    const st = fs.statSync(cred);
    expect([st.uid, (st.mode & 0o777).toString(8), (fs.statSync(path.dirname(cred)).mode & 0o777).toString(8)]).toEqual([0, '600', '700']);
    // Nothing registered at setup: each start of the unit does.
    expect(fs.existsSync(path.join(root, 'opt/actions-runner/calls.log'))).toBe(false);
    // Two starts as systemd makes them (the credential in $CREDENTIALS_DIRECTORY): two registrations.
    const credDir = path.join(work, 'eph-creds');
    fs.mkdirSync(credDir);
    fs.copyFileSync(cred, path.join(credDir, 'token'));
    const start = path.join(root, 'usr/local/libexec/firebuild/runner-ephemeral.sh');
    for (let i = 0; i < 2; i++) expect((await runCommand(start, [], { env: { ...process.env, CREDENTIALS_DIRECTORY: credDir } })).code).toBe(0);
    const c = calls(root);
    expect(c.filter((l) => l.startsWith('config.sh argv'))).toEqual([0, 1].map(() => expect.stringMatching(/^config\.sh argv: --unattended --ephemeral --replace --url https:\/\/github\.com\/acme\/app --labels \S+ --name \S+-\d+$/)));
    expect(c.filter((l) => l === 'config.sh env: ACTIONS_RUNNER_INPUT_TOKEN=EPH-token-1')).toHaveLength(2);
    expect(c.filter((l) => l.startsWith('run.sh argv'))).toEqual(['run.sh argv: ', 'run.sh argv: ']);
    // run.sh gets no token.
    expect(c.filter((l) => l.startsWith('run.sh env'))).toEqual([]);
    // Idempotent, and the token is never printed.
    const before = mtimes(root);
    const second = await setup(args);
    expect(second.lines.filter((l) => !l.startsWith('ok:'))).toEqual(['runner-setup: done']);
    expect(mtimes(root)).toEqual(before);
    expect(r.out + second.out).not.toContain('EPH-token');
  });

  test('--ephemeral --jitconfig-file: the JIT config goes to run.sh in its environment', async () => {
    const root = makeRoot('jit');
    const jit = path.join(work, 'jit-config');
    fs.writeFileSync(jit, 'eyJKSVQiOiJjb25maWcifQ==\n');
    expect((await setup([...fast(root), '--ephemeral', '--jitconfig-file', jit])).code).toBe(0);
    const unit = fs.readFileSync(path.join(root, 'etc/systemd/system/firebuild-runner.service'), 'utf8');
    expect(unit).toContain(`LoadCredential=jitconfig:${path.join(root, 'etc/firebuild/runner/jitconfig')}\n`);
    const credDir = path.join(work, 'jit-creds');
    fs.mkdirSync(credDir);
    fs.copyFileSync(jit, path.join(credDir, 'jitconfig'));
    expect((await runCommand(path.join(root, 'usr/local/libexec/firebuild/runner-ephemeral.sh'), [], { env: { ...process.env, CREDENTIALS_DIRECTORY: credDir } })).code).toBe(0);
    expect(calls(root)).toEqual(['run.sh argv: ', 'run.sh uid: 0', 'run.sh env: ACTIONS_RUNNER_INPUT_JITCONFIG=eyJKSVQiOiJjb25maWcifQ==']);
  });

  test('--privileged-vms: Firecracker, CNI, a root profile, firebuild-priv and a visudo-valid sudoers rule for it alone', async () => {
    const root = makeRoot('priv');
    const args = [...fast(root), '--skip-runner', '--privileged-vms', '--firecracker-tarball', fcTarball, '--firecracker-sha256', fcSha];
    const r = await setup(args);
    expect({ code: r.code, out: r.out }).toEqual({ code: 0, out: expect.stringMatching(/^changed: firecracker and jailer v1\.10\.1$/m) });
    const sudoers = path.join(root, 'etc/sudoers.d/firebuild');
    const priv = path.join(root, 'usr/local/libexec/firebuild-priv');
    const text = fs.readFileSync(sudoers, 'utf8');
    expect(text.split('\n').filter((l) => l && !l.startsWith('#'))).toEqual([`Defaults!${priv} env_reset`, `firebuild-runner ALL=(root) NOPASSWD: ${priv}`]);
    expect((fs.statSync(sudoers).mode & 0o777).toString(8)).toBe('440');
    const visudo = spawnSync('visudo', ['-cf', sudoers], { encoding: 'utf8' });
    expect({ status: visudo.status, out: visudo.stdout + visudo.stderr }).toEqual({ status: 0, out: expect.stringContaining('parsed OK') });
    const conf = JSON.parse(fs.readFileSync(path.join(root, 'etc/cni/conf.d/61-machines.conflist'), 'utf8'));
    expect(conf).toMatchObject({ name: 'machines', plugins: [{ type: 'bridge' }, { type: 'firewall' }] });
    const profile = JSON.parse(fs.readFileSync(path.join(root, 'etc/firebuild/priv/privileged.json'), 'utf8'));
    expect(profile).toMatchObject({ 'binary-firecracker': path.join(root, 'usr/local/bin/firecracker'), 'run-cache': path.join(root, 'var/lib/firebuild/run'), 'storage-provider-property-string': { 'rootfs-storage-root': path.join(root, 'home/firebuild-runner/.local/share/firebuild/rootfs') } });
    expect(fs.readFileSync(path.join(root, 'usr/local/libexec/firebuild/job-completed.sh'), 'utf8')).toContain(`sudo -n ${priv} purge --all || rc=1\n`);
    // Root acts for the store's owner: the runner user's uid, fixed in the script (whoever runs it).
    const runnerUid = /^firebuild-runner:[^:]*:(\d+):/m.exec(fs.readFileSync(path.join(root, 'etc/passwd'), 'utf8'))![1];
    expect(fs.readFileSync(priv, 'utf8')).toMatch(new RegExp(`^export PATH=.* FIREBUILD_ACTING_UID=${runnerUid}$`, 'm'));
    // firebuild-priv: a subcommand or a flag outside the allow-list is one line, exit 2.
    for (const [argv, want] of [
      [['image', 'rm', 'x/y:1'], /^firebuild-priv: 'image' is not allowed \(allowed: run kill purge ls inspect logs\)$/],
      [['kernel', 'build'], /^firebuild-priv: 'kernel' is not allowed/],
      [[], /^firebuild-priv: '' is not allowed/],
      [['run', '--from', 'a/b:1', '--binary-firecracker=/tmp/evil'], /^firebuild-priv: --binary-firecracker is not allowed: the root profile \S+privileged\.json decides it$/],
      [['ls', '--profile-conf-dir', '/tmp'], /^firebuild-priv: --profile-conf-dir is not allowed/],
      [['run', '--from', 'a/b:1', '--env-file', '/etc/shadow'], /^firebuild-priv: --env-file is not allowed/],
      // A -- taken as an option's value does not end the options: what follows is checked too.
      [['run', '--wait-http', 'http://x', '--wait-http-body', '--', '--binary-jailer', '/tmp/evil', '--from', 'a/b:1'], /^firebuild-priv: --binary-jailer is not allowed/],
      [['run', '--from', 'a/b:1', '--', '--cgroup-parent=firebuild/runner-2'], /^firebuild-priv: --cgroup-parent is not allowed/],
    ] as [string[], RegExp][]) {
      const r2 = spawnSync(priv, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      const p = { code: r2.status, stdout: r2.stdout, stderr: r2.stderr };
      expect([argv, p.code, (p.stdout + p.stderr).replace(/\n$/, '')]).toEqual([argv, 2, expect.stringMatching(want)]);
      expect((p.stdout + p.stderr).split('\n').filter((l) => l)).toHaveLength(1);
    }
    // An allowed one runs firebuild as root with the root profile (no VMs here: an empty listing).
    const ls = await runCommand(priv, ['ls', '--json']);
    expect({ code: ls.code, stdout: ls.stdout.trim(), stderr: ls.stderr }).toEqual({ code: 0, stdout: '[]', stderr: '' });

    const before = mtimes(root);
    const second = await setup(args);
    expect(second.lines.filter((l) => !l.startsWith('ok:'))).toEqual(['runner-setup: done']);
    expect(mtimes(root)).toEqual(before);
    // Without --privileged-vms again: the sudo path goes.
    const third = await setup([...fast(root), '--skip-runner']);
    expect(third.out).toMatch(/^changed: remove \S+sudoers\.d\/firebuild and \S+firebuild-priv \(no --privileged-vms\)$/m);
    expect([fs.existsSync(sudoers), fs.existsSync(priv)]).toEqual([false, false]);
  });

  test('--instances 2 --dry-run: each instance its own user, runner dir, store, port range, cgroup subtree and CNI networks; nothing written', async () => {
    const root = makeRoot('inst-dry');
    const before = mtimes(root);
    const r = await setup(['--dry-run', ...fast(root), '--instances', '2', '--privileged-vms', '--ephemeral', '--url', 'https://github.com/acme/app', '--token-file', '-'], { input: 'tok\n' });
    expect({ code: r.code, out: r.out }).toEqual({ code: 0, out: expect.stringMatching(/runner-setup: done\n$/) });
    const inst = r.lines.filter((l) => l.startsWith('instance '));
    const home = (i: number): string => path.join(root, `home/firebuild-runner-${i}`);
    expect(inst).toEqual([1, 2].map((i) => `instance ${i}: user firebuild-runner-${i}, runner ${path.join(root, `opt/actions-runner-${i}`)}, store and run cache ${home(i)}/.local/share/firebuild, `
      + `ports ${19000 + 1000 * i}-${19999 + 1000 * i}, cgroup firebuild/runner-${i}, CNI machines-${i} (fcrun${i} 10.217.${2 * i - 2}.0/24) and machine-builds-${i} (fcbuild${i} 10.217.${2 * i - 1}.0/24), `
      + `kernels shared from ${path.join(root, 'var/lib/firebuild-shared/kernels')} (read only)`));
    const steps = r.lines.filter((l) => l.startsWith('would: '));
    for (const i of [1, 2]) {
      for (const want of [
        `would: user firebuild-runner-${i} (groups kvm, home /home/firebuild-runner-${i})`,
        `would: directory ${path.join(root, `var/lib/firebuild/run-${i}`)} (700)`,
        `would: write ${path.join(root, `etc/cni/conf.d/60-machine-builds-${i}.conflist`)}`,
        `would: write ${path.join(root, `etc/cni/conf.d/61-machines-${i}.conflist`)}`,
        `would: write ${path.join(root, `etc/firebuild/priv/privileged-${i}.json`)}`,
        `would: write ${path.join(root, `usr/local/libexec/firebuild-priv-${i}`)}`,
        `would: write ${path.join(root, `usr/local/libexec/firebuild/job-completed-${i}.sh`)}`,
        `would: write ${path.join(root, `etc/systemd/system/firebuild-runner-${i}.service`)}`,
      ]) expect([want, steps.includes(want)]).toEqual([want, true]);
      expect(steps.some((s) => s.includes(`install actions/runner ${VERSION}`) && s.endsWith(`into ${path.join(root, `opt/actions-runner-${i}`)}`))).toBe(true);
    }
    // Today's single-runner paths are not touched.
    expect(steps.filter((s) => /actions-runner( |\/|$)|61-machines\.conflist|privileged\.json|firebuild-priv$|firebuild-runner\.service/.test(s))).toEqual([]);
    expect(mtimes(root)).toEqual(before);
  });

  test.each([
    ['0', [], /^runner-setup: malformed --instances '0': give a number of runner instances from 1 to 32$/],
    ['33', [], /^runner-setup: malformed --instances '33'/],
    ['two', [], /^runner-setup: malformed --instances 'two'/],
    ['2', ['--port-base', '32000'], /^runner-setup: the port ranges 32000-33999 \(--port-base 32000, 1000 per instance\) overlap the kernel's ephemeral ports \d+-\d+ \(net\.ipv4\.ip_local_port_range\), which outgoing connections take: pick a --port-base whose ranges end below \d+$/],
    ['3', ['--port-base', '63536'], /^runner-setup: --port-base 63536 with --instances 3 gives ports 63536-66535: they must lie in 1024-65535 \(1000 per instance\)$/],
    ['2', ['--subnet-base', '10.0.0.0/8'], /^runner-setup: malformed --subnet-base '10\.0\.0\.0\/8': give a private \/16 as A\.B\.0\.0\/16/],
    ['2', ['--subnet-base', '8.8.0.0/16'], /^runner-setup: malformed --subnet-base '8\.8\.0\.0\/16'/],
  ])('--instances %s %j is refused in one line before anything is written', async (n, extra, want) => {
    const root = makeRoot(`inst-bad-${n}-${extra.join('')}`.replace(/[^A-Za-z0-9-]/g, '_'));
    const before = mtimes(root);
    const r = await setup([...fast(root), '--skip-runner', '--instances', n, ...extra]);
    expect({ code: r.code, lines: r.lines }).toEqual({ code: 2, lines: [expect.stringMatching(want)] });
    expect(mtimes(root)).toEqual(before);
  });

  test('--instances 2: two users, runners, .env files, conflists, root profiles and firebuild-priv scripts that share nothing but the kernels; a second run changes nothing', async () => {
    const root = makeRoot('inst');
    const args = [...fast(root), '--instances', '2', '--port-base', '24000', '--subnet-base', '10.218.0.0/16', '--privileged-vms',
      '--firecracker-tarball', fcTarball, '--firecracker-sha256', fcSha, '--url', 'https://github.com/acme/app', '--token-file', '-'];
    const first = await setup(args, { input: 'tok\n' });
    expect({ code: first.code, out: first.out }).toEqual({ code: 0, out: expect.stringMatching(/runner-setup: done\n$/) });
    const passwd = fs.readFileSync(path.join(root, 'etc/passwd'), 'utf8');
    const uids = [1, 2].map((i) => Number(new RegExp(`^firebuild-runner-${i}:x:(\\d+):`, 'm').exec(passwd)?.[1]));
    expect(uids[0]).toBeGreaterThan(0);
    expect(uids[1]).not.toBe(uids[0]);
    expect(passwd).not.toMatch(/^firebuild-runner:/m);
    const shared = path.join(root, 'var/lib/firebuild-shared/kernels');
    const st = fs.statSync(shared);
    expect([st.uid, (st.mode & 0o777).toString(8)]).toEqual([0, '755']);
    const envs = [1, 2].map((i) => Object.fromEntries(fs.readFileSync(path.join(root, `opt/actions-runner-${i}/.env`), 'utf8').split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)])));
    const hooks = path.join(root, 'usr/local/libexec/firebuild');
    for (const [k, i] of [[0, 1], [1, 2]] as const) {
      expect(envs[k]).toEqual({
        ACTIONS_RUNNER_HOOK_JOB_STARTED: `${hooks}/job-started-${i}.sh`, ACTIONS_RUNNER_HOOK_JOB_COMPLETED: `${hooks}/job-completed-${i}.sh`,
        FIREBUILD_HOME: path.join(root, `home/firebuild-runner-${i}/.local/share/firebuild`),
        FIREBUILD_PROFILE_CONF_DIR: path.join(root, `home/firebuild-runner-${i}/.config/firebuild/profiles`),
        FIREBUILD_PORT_RANGE: `${23000 + 1000 * i}-${23999 + 1000 * i}`, FIREBUILD_CGROUP_PARENT: `firebuild/runner-${i}`,
        FIREBUILD_CNI_NETWORK_ALIASES: `machines=machines-${i},machine-builds=machine-builds-${i}`, FIREBUILD_SHARED_KERNELS: shared,
      });
      // The hooks act on the instance's own store and run cache, whatever the job's environment says.
      const completed = fs.readFileSync(path.join(hooks, `job-completed-${i}.sh`), 'utf8');
      expect(completed).toContain(`export FIREBUILD_HOME=${envs[k]!.FIREBUILD_HOME}\n`);
      expect(completed).toContain(`export FIREBUILD_CGROUP_PARENT=firebuild/runner-${i}\n`);
      expect(completed).toContain(`sudo -n ${path.join(root, `usr/local/libexec/firebuild-priv-${i}`)} purge --all || rc=1\n`);
      // Its runner registered as its own user, with its own name.
      const c = fs.readFileSync(path.join(root, `opt/actions-runner-${i}/calls.log`), 'utf8');
      expect(c).toContain(`config.sh uid: ${uids[k]}`);
      expect(c).toMatch(new RegExp(`--name \\S+-${i} --replace`));
      expect(c).toContain(`svc.sh argv: install firebuild-runner-${i}`);
    }
    // CNI: distinct names, bridges and /24s.
    const nets = [1, 2].flatMap((i) => [`60-machine-builds-${i}`, `61-machines-${i}`]).map((f) => JSON.parse(fs.readFileSync(path.join(root, `etc/cni/conf.d/${f}.conflist`), 'utf8')) as { name: string; plugins: { bridge?: string; ipam?: { subnet: string } }[] });
    expect(nets.map((n) => [n.name, n.plugins[0]!.bridge, n.plugins[0]!.ipam!.subnet])).toEqual([
      ['machine-builds-1', 'fcbuild1', '10.218.1.0/24'], ['machines-1', 'fcrun1', '10.218.0.0/24'],
      ['machine-builds-2', 'fcbuild2', '10.218.3.0/24'], ['machines-2', 'fcrun2', '10.218.2.0/24'],
    ]);
    // The root profiles: each instance's run cache, store, range, cgroup subtree and networks; both read the shared kernels.
    for (const i of [1, 2]) {
      const p = JSON.parse(fs.readFileSync(path.join(root, `etc/firebuild/priv/privileged-${i}.json`), 'utf8'));
      expect(p).toMatchObject({
        'run-cache': path.join(root, `var/lib/firebuild/run-${i}`), 'port-range': `${23000 + 1000 * i}-${23999 + 1000 * i}`, 'cgroup-parent': `firebuild/runner-${i}`,
        'cni-network-aliases': { machines: `machines-${i}`, 'machine-builds': `machine-builds-${i}` },
        'storage-provider-property-string': { 'rootfs-storage-root': path.join(root, `home/firebuild-runner-${i}/.local/share/firebuild/rootfs`), 'shared-kernel-storage-root': shared },
      });
      const priv = path.join(root, `usr/local/libexec/firebuild-priv-${i}`);
      expect(fs.readFileSync(priv, 'utf8')).toMatch(new RegExp(`FIREBUILD_ACTING_UID=${uids[i - 1]}\\nexec .* --profile privileged-${i} `));
      // firebuild-priv-N takes its instance settings from its root profile alone; an allowed command reads that profile.
      const r2 = spawnSync(priv, ['run', '--from', 'a/b:1', '--port-range=1000-2000'], { encoding: 'utf8' });
      expect([r2.status, r2.stderr.trim()]).toEqual([2, `firebuild-priv: --port-range is not allowed: the root profile ${path.join(root, `etc/firebuild/priv/privileged-${i}.json`)} decides it`]);
      const ls = await runCommand(priv, ['ls', '--json']);
      expect({ code: ls.code, stdout: ls.stdout.trim(), stderr: ls.stderr }).toEqual({ code: 0, stdout: '[]', stderr: '' });
    }
    const sudoers = path.join(root, 'etc/sudoers.d/firebuild');
    expect(fs.readFileSync(sudoers, 'utf8').split('\n').filter((l) => l && !l.startsWith('#'))).toEqual([1, 2].flatMap((i) => {
      const priv = path.join(root, `usr/local/libexec/firebuild-priv-${i}`);
      return [`Defaults!${priv} env_reset`, `firebuild-runner-${i} ALL=(root) NOPASSWD: ${priv}`];
    }));
    const visudo = spawnSync('visudo', ['-cf', sudoers], { encoding: 'utf8' });
    expect(visudo.status).toBe(0);

    const before = mtimes(root);
    const second = await setup(args, { input: 'tok\n' });
    expect(second.lines.filter((l) => !l.startsWith('ok:') && !l.startsWith('instance '))).toEqual(['runner-setup: done']);
    expect(mtimes(root)).toEqual(before);
  });

  test('installs firebuild from the checkout (npm ci, build) root-owned, runs it through the wrapper, and keeps it on a second run', async () => {
    const root = makeRoot('install');
    const args = ['--root', root, '--skip-packages', '--skip-kernel', '--skip-runner', '--kvm-device', kvmDev, '--cpuinfo', cpuVmx];
    const first = await setup(args);
    expect({ code: first.code, out: first.out }).toEqual({ code: 0, out: expect.stringMatching(/^changed: firebuild from \S+ in \S+\/opt\/firebuild$/m) });
    const dir = path.join(root, 'opt/firebuild');
    expect(fs.existsSync(path.join(dir, 'lib/cli/main.js'))).toBe(true);
    expect(fs.lstatSync(path.join(dir, 'node_modules')).isDirectory()).toBe(true);
    // Root's, and nobody else may write it.
    const writable = spawnSync('find', [dir, '(', '-perm', '-g+w', '-o', '-perm', '-o+w', '-o', '!', '-uid', '0', ')', '!', '-type', 'l', '-print', '-quit'], { encoding: 'utf8' });
    expect(writable.stdout).toBe('');
    const wrapper = fs.readFileSync(path.join(root, 'usr/local/bin/firebuild'), 'utf8');
    expect(wrapper).toContain(`main=${dir}/bin/firebuild.js\n`);
    const v = await runCommand(path.join(root, 'usr/local/bin/firebuild'), ['--version']);
    expect({ code: v.code, stdout: v.stdout.trim() }).toEqual({ code: 0, stdout: JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).version });
    const second = await setup(args);
    expect(second.out).toMatch(/^ok: firebuild in \S+\/opt\/firebuild$/m);
    expect(second.lines.filter((l) => !l.startsWith('ok:'))).toEqual(['runner-setup: done']);
  }, 15 * 60_000);
});
