import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runCli, tempDir, expectJsonResult } from '../helpers/cli.js';
import { freePort, importTestKernel, killAll } from '../helpers/vm.js';

/**
 * SSH into VMs booted from the shipped Debian base OS (baseos/debian: systemd, OpenSSH, user `debian`
 * with key login only): the init installs the --identity-file key for --ssh-user and starts sshd; with
 * --init image, systemd runs as PID 1 and starts sshd itself. The host's ssh client connects through the
 * published port (user-mode networking).
 */
let work: string;
let env: NodeJS.ProcessEnv;
let key: string;
const runCache = (): string => path.join(work, 'home', 'run');

function ssh(port: number, command: string): string {
  return execFileSync('ssh', ['-i', key, '-p', String(port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=20', '-o', 'LogLevel=ERROR', 'debian@127.0.0.1', command], { encoding: 'utf8', timeout: 60_000 });
}

beforeAll(async () => {
  work = await tempDir();
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  key = path.join(work, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  const b = await runCli(['baseos', '--dockerfile', path.resolve('baseos/debian/Dockerfile'), '--tag', 'tests/debian-ssh:1', '--free-space', '64M'], { env });
  expect(b.code).toBe(0);
  expect(await importTestKernel(env)).toBe(0);
}, 20 * 60_000);
afterAll(async () => {
  await killAll(runCache(), env);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('SSH into a VM', () => {
  test("firebuild's init installs the key for --ssh-user and starts the image's sshd", async () => {
    const port = await freePort();
    const r = await runCli(['run', '--from', 'tests/debian-ssh:1', '--name', 'sshvm', '--ssh-user', 'debian', '--identity-file', `${key}.pub`, '--port', `127.0.0.1:${port}:22`, '--daemonize', '--wait-tcp', String(port), '--', 'sleep', '3600'], { env });
    expectJsonResult(r);
    const vm = JSON.parse(r.stdout) as { 'vmm-id': string };
    expect(ssh(port, 'id -un; hostname; stat -c %a ~/.ssh/authorized_keys').split('\n').filter(Boolean)).toEqual(['debian', 'sshvm', '600']);
    expect((await runCli(['kill', '--vmm-id', vm['vmm-id']], { env })).code).toBe(0);
  });

  test('--init image: systemd is PID 1 after the setup and starts sshd; the key is in place', async () => {
    const port = await freePort();
    const r = await runCli(['run', '--from', 'tests/debian-ssh:1', '--name', 'systemd', '--init', 'image', '--ssh-user', 'debian', '--identity-file', `${key}.pub`, '--port', `127.0.0.1:${port}:22`, '--daemonize', '--wait-tcp', String(port), '--wait-timeout', '180'], { env });
    expectJsonResult(r);
    const vm = JSON.parse(r.stdout) as { 'vmm-id': string };
    let out = '';
    for (let i = 0; i < 20 && !out; i++) {
      try {
        out = ssh(port, 'cat /proc/1/comm; hostname');
      } catch {
        await new Promise((res) => setTimeout(res, 3000)); // sshd may still be generating host keys
      }
    }
    expect(out.split('\n').filter(Boolean)).toEqual(['systemd', 'systemd']);
    expect((await runCli(['kill', '--vmm-id', vm['vmm-id'], '--shutdown-timeout', '5'], { env })).code).toBe(0);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });
});
