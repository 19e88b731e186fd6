import { expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import { lines, runCli, useTempHome } from '../helpers/cli.js';

interface Row { part: string; status: string; required: boolean; detail: string; fix?: string }

const home = useTempHome();

test('doctor reports every part on this host, and passes when the required ones are present', async () => {
  const r = await runCli(['doctor', '--json'], { env: home.env });
  const rows = JSON.parse(r.stdout) as Row[];
  const by = Object.fromEntries(rows.map((x) => [x.part, x]));
  expect(Object.keys(by).sort()).toEqual(['busybox-static', 'cni', 'docker', 'e2fsprogs', 'firecracker', 'isolated-net', 'jailer', 'kernel', 'kvm', 'privileges', 'profile-dir', 'qemu', 'run-cache', 'storage', 'vmm'].sort());
  // scripts/install-deps.sh installed and started these.
  expect(by['docker']?.status).toBe('ok');
  expect(by['qemu']?.status).toBe('ok');
  expect(by['e2fsprogs']?.status).toBe('ok');
  expect(by['busybox-static']?.status).toBe('ok');
  expect(by['cni']?.status).toBe('ok');
  expect(by['vmm']?.status).toBe('ok');
  expect(by['isolated-net']?.status).toBe('ok');
  // The suite runs as root: the jailer and CNI are available (a runner user's doctor names runner-setup instead).
  expect(by['privileges']).toMatchObject({ status: process.getuid?.() === 0 ? 'ok' : 'warn', required: false });
  if (fs.existsSync('/sys/module/kvm_pvm') && fs.existsSync('/dev/kvm')) {
    expect(by['kvm']).toMatchObject({ status: 'warn', required: false });
    expect(by['kvm']?.detail).toMatch(/PVM/);
    expect(by['kvm']?.fix).toMatch(/TCG/);
  }
  if (!fs.existsSync('/dev/kvm')) {
    expect(by['kvm']).toMatchObject({ status: 'warn', required: false });
    expect(by['kvm']?.detail).toMatch(/\/dev\/kvm does not exist/);
    expect(by['kvm']?.fix).toMatch(/--accel tcg/);
  }
  for (const row of rows) if (row.status !== 'ok') expect(row.fix).toBeTruthy();
  expect(r.code).toBe(0);
});

test('doctor exits 2 naming the missing part when an optional part is required', async () => {
  const r = await runCli(['doctor', '--require', 'firecracker'], { env: { ...home.env, PATH: '/usr/bin:/bin' } });
  expect(r.code).toBe(2);
  expect(r.stdout).toMatch(/^firecracker\s+missing\s+yes/m);
  expect(lines(r.stderr)).toEqual([expect.stringMatching(/^error: required parts missing: firecracker: install firecracker/)]);
});

test('doctor rejects an unknown --require part', async () => {
  const r = await runCli(['doctor', '--require', 'gpu'], { env: home.env });
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/unknown --require part 'gpu'/);
});
