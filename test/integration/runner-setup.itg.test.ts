import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO, snapshot, tempDir } from '../helpers/cli.js';

/**
 * runner-setup/setup.sh under a temp --root: the dry run touches nothing and names every step; a real
 * run (packages, kernel and GitHub registration skipped: they need the network and GitHub) installs a
 * Firecracker release tarball after checking its sha256, and a second run changes nothing.
 */
const SCRIPT = path.join(REPO, 'runner-setup', 'setup.sh');
let work: string;
let tarball: string;
let sha: string;
const setup = (...args: string[]): { code: number; out: string } => {
  const r = spawnSync('bash', [SCRIPT, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
};

beforeAll(async () => {
  work = await tempDir();
  // A release tarball laid out as Firecracker's (release-vX-x86_64/{firecracker,jailer}-vX-x86_64).
  const rel = path.join(work, 'fc', 'release-v1.10.1-x86_64');
  fs.mkdirSync(rel, { recursive: true });
  for (const b of ['firecracker', 'jailer']) fs.writeFileSync(path.join(rel, `${b}-v1.10.1-x86_64`), `#!/bin/sh\necho ${b}\n`, { mode: 0o755 });
  tarball = path.join(work, 'fc.tgz');
  spawnSync('tar', ['-czf', tarball, '-C', path.join(work, 'fc'), '.']);
  sha = createHash('sha256').update(fs.readFileSync(tarball)).digest('hex');
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('runner-setup/setup.sh', () => {
  test('--dry-run prints every step and writes nothing', () => {
    const root = path.join(work, 'dry');
    const r = setup('--dry-run', '--root', root, '--url', 'https://github.com/acme/app', '--token', 'x', '--ephemeral');
    expect(r.code).toBe(0);
    const steps = r.out.split('\n').filter((l) => l.startsWith('would: '));
    for (const want of [/packages/, /firecracker and jailer v1\.10\.1/, /srv\/jailer/, /profile/, /kernel fc61/, /machine-builds\.conflist/, /machines\.conflist/, /kvm\.rules/, /job-completed\.sh/, /register the runner at https:\/\/github\.com\/acme\/app with labels self-hosted,linux,kvm,firebuild \(ephemeral\)/]) {
      expect([want.source, steps.some((s) => want.test(s))]).toEqual([want.source, true]);
    }
    expect(r.out).not.toMatch(/^changed:/m);
    expect(fs.existsSync(root)).toBe(false);
  });

  test('a real run installs and configures; a second run changes nothing', () => {
    const root = path.join(work, 'real');
    const args = ['--root', root, '--skip-packages', '--skip-kernel', '--skip-runner', '--firecracker-tarball', tarball, '--firecracker-sha256', sha];
    const first = setup(...args);
    expect(first.code).toBe(0);
    expect(first.out).toMatch(/^changed: firecracker and jailer v1\.10\.1$/m);
    expect(fs.readFileSync(path.join(root, 'usr/local/bin/firecracker'), 'utf8')).toContain('echo firecracker');
    const profile = JSON.parse(fs.readFileSync(path.join(root, 'etc/firebuild/profiles/default.json'), 'utf8'));
    expect(profile).toMatchObject({ 'binary-firecracker': path.join(root, 'usr/local/bin/firecracker'), 'chroot-base': path.join(root, 'srv/jailer') });
    const conf = JSON.parse(fs.readFileSync(path.join(root, 'etc/cni/conf.d/61-machines.conflist'), 'utf8'));
    expect(conf).toMatchObject({ name: 'machines', plugins: [{ type: 'bridge' }, { type: 'firewall' }] });
    expect(fs.readFileSync(path.join(root, 'opt/firebuild/job-completed.sh'), 'utf8')).toMatch(/firebuild\.js purge/);
    const before = snapshot(root).concat(fs.readdirSync(root, { recursive: true }).map((f) => `${f} ${fs.statSync(path.join(root, String(f))).mtimeMs}`));

    const second = setup(...args);
    expect(second.code).toBe(0);
    expect(second.out.split('\n').filter((l) => l.startsWith('changed:'))).toEqual([]);
    const after = snapshot(root).concat(fs.readdirSync(root, { recursive: true }).map((f) => `${f} ${fs.statSync(path.join(root, String(f))).mtimeMs}`));
    expect(after).toEqual(before);
  });

  test.each([
    ['a tarball whose sha256 does not match', () => ['--root', path.join(work, 'bad'), '--skip-packages', '--skip-kernel', '--skip-runner', '--firecracker-tarball', tarball, '--firecracker-sha256', '0'.repeat(64)], /^runner-setup: firecracker tarball checksum mismatch: refusing it$/m],
    ['no sha256 for the pinned release', () => ['--root', path.join(work, 'nosha'), '--skip-packages', '--skip-kernel', '--skip-runner', '--firecracker-tarball', tarball], /^runner-setup: no sha256 for firecracker-v1\.10\.1-x86_64\.tgz/m],
    ['registration without --url and --token', () => ['--root', path.join(work, 'noreg'), '--skip-packages'], /^runner-setup: --url and --token are needed/m],
  ])('refuses %s with one line, exit 2, no Firecracker installed', (_n, args, want) => {
    const a = args();
    const r = setup(...a);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(want);
    expect(fs.existsSync(path.join(a[1] as string, 'usr/local/bin/firecracker'))).toBe(false);
  });
});
