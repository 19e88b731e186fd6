import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir } from '../helpers/cli.js';
import { annotations, runAction, type ActionRun } from '../helpers/runner.js';
import { debianCloudKernel } from '../helpers/vm.js';

/**
 * The bundled setup action on a "GitHub-hosted runner" (RUNNER_ENVIRONMENT=github-hosted): it installs
 * the packages dpkg lacks, lifts Ubuntu's AppArmor user-namespace restriction and makes /dev/kvm usable
 * by every user. The host's files are a temp root (FIREBUILD_TEST_HOST_ROOT: os-release, dpkg status,
 * /dev/kvm, /proc/sys); the runner's passwordless sudo is a double on PATH that records every call and
 * runs only the file writes (install -d, tee: under the temp root). apt-get and udevadm are recorded,
 * never run, as they would change this machine; the apt-get double marks what it "installed" in the
 * temp root's dpkg status, as dpkg would. The rest of setup runs for real (doctor checks, kernel import).
 */
let work: string;
let bin: string;
let refusing: string;
let runs = 0;

const UBUNTU_2404 = 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n';
const FEDORA = 'NAME="Fedora Linux"\nVERSION_ID=40\nID=fedora\nPRETTY_NAME="Fedora Linux 40"\n';
const RULE = 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"\n';

// One call a line, its arguments tab-separated.
const RECORD = 'log=${FAKE_SUDO_LOG:?}; ( IFS=$(printf "\\t"); printf "%s\\n" "$*" ) >> "$log"\n';
const SUDO = `#!/bin/sh
# A double for a hosted runner's passwordless sudo (see the test's comment).
${RECORD}[ "$1" = -n ] || { echo "sudo double: called without -n" >&2; exit 64; }
shift
case "$1" in
  true|install|tee) exec "$@" ;;
  env)
    [ "$3" = apt-get ] && [ "$4" = install ] || exit 0
    shift 4
    for a in "$@"; do
      case "$a" in -*) ;; *) printf '\\nPackage: %s\\nStatus: install ok installed\\n' "$a" >> "$FIREBUILD_TEST_HOST_ROOT/var/lib/dpkg/status" ;; esac
    done ;;
esac
exit 0
`;
const SUDO_REFUSING = `#!/bin/sh
${RECORD}echo 'sudo: a password is required' >&2
exit 1
`;

function dpkgStatus(pkgs: Record<string, string>): string {
  return Object.entries(pkgs).map(([p, st]) => `Package: ${p}\nStatus: ${st}\nArchitecture: amd64\nVersion: 1\n`).join('\n');
}

/** A fresh runner's host files: Ubuntu 24.04 with some packages, /dev/kvm (root:root 0660 on a hosted runner), user namespaces restricted. */
function hostRoot(o: { osRelease?: string; kvm?: boolean } = {}): string {
  const root = path.join(work, `root${runs++}`);
  const files: Record<string, string> = {
    'etc/os-release': o.osRelease ?? UBUNTU_2404,
    // e2fsprogs, iproute2, zstd installed; QEMU removed with its configuration left; busybox-static, slirp4netns never installed.
    'var/lib/dpkg/status': dpkgStatus({ e2fsprogs: 'install ok installed', iproute2: 'install ok installed', zstd: 'install ok installed', 'qemu-system-x86': 'deinstall ok config-files' }),
    'proc/sys/kernel/apparmor_restrict_unprivileged_userns': '1\n',
    ...(o.kvm === false ? {} : { 'dev/kvm': '' }),
  };
  for (const [p, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    fs.writeFileSync(path.join(root, p), text);
  }
  return root;
}

function env(root: string, o: { hosted?: boolean; sudoDir?: string } = {}): NodeJS.ProcessEnv {
  const home = path.join(root, 'home');
  return {
    PATH: `${o.sudoDir ?? bin}:${process.env.PATH}`,
    RUNNER_ENVIRONMENT: o.hosted === false ? 'self-hosted' : 'github-hosted',
    FIREBUILD_TEST_HOST_ROOT: root,
    FAKE_SUDO_LOG: path.join(root, 'sudo.log'),
    FIREBUILD_HOME: home,
    FIREBUILD_PROFILE_CONF_DIR: path.join(home, 'profiles'),
    FIREBUILD_CHROOT_BASE: path.join(home, 'jailer'),
    RUNNER_TOOL_CACHE: path.join(work, 'toolcache'),
    GITHUB_WORKSPACE: work,
  };
}

/** The sudo calls of a root's runs so far, each as its argv. */
function sudoCalls(root: string): string[][] {
  const f = path.join(root, 'sudo.log');
  return fs.existsSync(f) ? fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => l.split('\t')) : [];
}

function inputs(extra: Record<string, string> = {}): Record<string, string> {
  const k = debianCloudKernel();
  return { accel: 'tcg', backend: 'qemu', cache: 'false', 'kernel-path': k.kernel, 'kernel-initrd': k.initrd, ...extra };
}

function ok(r: ActionRun): void {
  expect({ code: r.code, errors: annotations(r.stdout), warnings: annotations(r.stdout, 'warning') }).toEqual({ code: 0, errors: [], warnings: [] });
}

const message = (annotation: string): string => annotation.replace(/^::\w+[^:]*::/, '');

beforeAll(async () => {
  work = await tempDir('firebuild-hosted-');
  bin = path.join(work, 'bin');
  refusing = path.join(work, 'bin-refusing');
  for (const [dir, script] of [[bin, SUDO], [refusing, SUDO_REFUSING]] as const) {
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'sudo'), script, { mode: 0o755 });
  }
});

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('setup on a GitHub-hosted runner', () => {
  test('installs exactly the missing packages, lifts the user-namespace restriction and writes the KVM udev rule, through sudo -n; a second job changes nothing', async () => {
    const root = hostRoot();
    const first = await runAction('setup/index.js', inputs(), env(root));
    ok(first);
    const n = ['-n', 'env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get'];
    expect(sudoCalls(root)).toEqual([
      ['-n', 'true'],
      [...n, 'update', '-q'],
      [...n, 'install', '-y', '-q', '--no-install-recommends', 'busybox-static', 'qemu-system-x86', 'slirp4netns'],
      ['-n', 'tee', path.join(root, 'proc/sys/kernel/apparmor_restrict_unprivileged_userns')],
      ['-n', 'install', '-d', '-m', '0755', path.join(root, 'etc/udev/rules.d')],
      ['-n', 'tee', path.join(root, 'etc/udev/rules.d/99-kvm4all.rules')],
      ['-n', 'udevadm', 'control', '--reload-rules'],
      ['-n', 'udevadm', 'trigger', '--name-match=kvm'],
    ]);
    expect(fs.readFileSync(path.join(root, 'etc/udev/rules.d/99-kvm4all.rules'), 'utf8')).toBe(RULE);
    expect(fs.readFileSync(path.join(root, 'proc/sys/kernel/apparmor_restrict_unprivileged_userns'), 'utf8')).toBe('0\n');
    expect(first.summary).toContain('installed busybox-static, qemu-system-x86, slirp4netns (Ubuntu 24.04.1 LTS)');
    expect(first.summary).toContain('enabled for every user (udev rule)');
    // The rest of setup ran: the profile later steps use.
    expect(first.exported).toMatchObject({ FIREBUILD_PROFILE: 'ci' });

    // The packages are installed now (the apt-get double recorded them in dpkg's status), the rule is in place.
    const second = await runAction('setup/index.js', inputs(), env(root));
    ok(second);
    expect(sudoCalls(root)).toHaveLength(8);
    expect(second.summary).toContain('all present (Ubuntu 24.04.1 LTS)');
  });

  test('a self-hosted runner is left alone with the defaults (auto); true asks for it there too', async () => {
    const root = hostRoot();
    ok(await runAction('setup/index.js', inputs(), env(root, { hosted: false })));
    expect(sudoCalls(root)).toEqual([]);
    expect(fs.existsSync(path.join(root, 'etc/udev'))).toBe(false);
    ok(await runAction('setup/index.js', inputs({ 'enable-kvm': 'true' }), env(root, { hosted: false })));
    expect(sudoCalls(root).map((c) => c[1])).toEqual(['true', 'install', 'tee', 'udevadm', 'udevadm']);
  });

  test('no /dev/kvm: nothing to enable, no udev call', async () => {
    const root = hostRoot({ kvm: false });
    const r = await runAction('setup/index.js', inputs({ 'install-packages': 'false', 'allow-userns': 'false' }), env(root));
    ok(r);
    expect(sudoCalls(root)).toEqual([]);
    expect(r.summary).toContain('no /dev/kvm');
  });

  test('bad cases are one annotation and a failed step, before anything is installed or written', async () => {
    // Not root (here: a sudo that wants a password) and packages missing.
    const noSudo = hostRoot();
    const a = await runAction('setup/index.js', inputs(), env(noSudo, { sudoDir: refusing }));
    expect({ code: a.code, errors: annotations(a.stdout).map(message) }).toEqual({ code: 1, errors: [expect.stringMatching(/^preparing this runner needs root or passwordless sudo, and sudo -n refuses \(sudo: a password is required\): .*set install-packages, allow-userns and enable-kvm to false/)] });
    expect(sudoCalls(noSudo)).toEqual([['-n', 'true']]);
    expect(a.exported).toEqual({});

    // An OS without apt.
    const fedora = hostRoot({ osRelease: FEDORA });
    const b = await runAction('setup/index.js', inputs(), env(fedora));
    expect({ code: b.code, errors: annotations(b.stdout).map(message) }).toEqual({ code: 1, errors: [expect.stringMatching(/^installing packages needs Debian or Ubuntu \(apt\); this runner is Fedora Linux 40 \(ID=fedora\): .*set install-packages: false$/)] });
    expect(sudoCalls(fedora)).toEqual([]);

    // A value that is not a choice.
    const c = await runAction('setup/index.js', inputs({ 'enable-kvm': 'yes' }), env(hostRoot()));
    expect({ code: c.code, errors: annotations(c.stdout).map(message) }).toEqual({ code: 1, errors: ["input 'enable-kvm' is 'yes': use one of auto, true, false"] });
  });
});
