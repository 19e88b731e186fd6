import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { lines, runCli, tempDir, expectJsonResult } from '../helpers/cli.js';
import { alive, freePort, importTestKernel, killAll } from '../helpers/vm.js';

/**
 * The runtime end to end on real parts: an image built from examples/hello boots under QEMU (TCG here)
 * with user-mode networking; its port is published on 127.0.0.1; ls/inspect/logs/kill/purge manage it.
 */
let work: string;
let env: NodeJS.ProcessEnv;
const runCache = (): string => path.join(work, 'home', 'run');
const errorLines = (s: string): string[] => lines(s).filter((l) => l.startsWith('error:'));
beforeAll(async () => {
  work = await tempDir();
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  expect(await importTestKernel(env)).toBe(0);
  // The default engine (vm): the README's example built with its RUN in a build VM, then booted by every test here.
  const b = await runCli(['rootfs', '--dockerfile', path.resolve('examples/hello/Dockerfile'), '--tag', 'examples/hello:1', '--free-space', '32M', '--accel', 'tcg'], { env });
  expect({ code: b.code, stderr: b.code ? b.stderr : '' }).toEqual({ code: 0, stderr: '' });
  expect(JSON.parse(b.stdout)).toMatchObject({ builder: 'vm', executed: 3 });
});
afterAll(async () => {
  // Never leave a VM behind, whatever failed.
  await killAll(runCache(), env);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('firebuild run', () => {
  test('--daemonize with --port and --env: the service answers with the env value and hostname; ls, inspect, logs; kill leaves nothing', async () => {
    const port = await freePort();
    const r = await runCli(['run', '--from', 'examples/hello:1', '--name', 'hello1', '--network', 'user', '--port', `127.0.0.1:${port}:8080`, '--env', 'GREETING=hi', '--daemonize', '--wait-http', `http://127.0.0.1:${port}/cgi-bin/index.cgi`], { env });
    // The whole result on failure: a run that says nothing must show its log.
    expectJsonResult(r);
    expect(errorLines(r.stderr)).toEqual([]);
    const vm = JSON.parse(r.stdout) as { 'vmm-id': string; pid: number; 'ip-address': string; 'cache-dir': string; 'serial-log': string };
    expect(vm).toMatchObject({ 'ip-address': '10.0.2.15', 'cache-dir': path.join(runCache(), vm['vmm-id']) });
    const body = await (await fetch(`http://127.0.0.1:${port}/cgi-bin/index.cgi`)).text();
    expect(body).toBe('hi from hello1\n');

    const ls = JSON.parse((await runCli(['ls', '--json'], { env })).stdout) as { id: string; name: string; running: boolean }[];
    expect(ls).toEqual([expect.objectContaining({ id: vm['vmm-id'], name: 'hello1', running: true })]);
    const inspect = JSON.parse((await runCli(['inspect', '--vmm-id', vm['vmm-id']], { env })).stdout);
    expect(inspect.NetworkInterfaces[0].StaticConfiguration.IPConfiguration.IP).toBe('10.0.2.15');
    expect(JSON.stringify(inspect)).not.toContain('GREETING'); // no environment values in the state
    expect(fs.statSync(path.join(vm['cache-dir'], 'state.json')).mode & 0o777).toBe(0o600);
    expect((await runCli(['logs', '--vmm-id', vm['vmm-id']], { env })).stdout).toContain('serving on :8080');

    // The name is taken while it runs.
    const taken = await runCli(['run', '--from', 'examples/hello:1', '--name', 'hello1', '--daemonize'], { env });
    expect(errorLines(taken.stderr)).toEqual(['error: --name hello1 is taken by a running VM: choose another name']);

    const k = await runCli(['kill', '--vmm-id', vm['vmm-id']], { env });
    expect(k.code).toBe(0);
    expect(alive(vm.pid)).toBe(false);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test('a VM killed with SIGKILL is cleaned by purge', async () => {
    const r = await runCli(['run', '--from', 'examples/hello:1', '--name', 'victim', '--network', 'none', '--daemonize'], { env });
    expectJsonResult(r);
    const vm = JSON.parse(r.stdout) as { 'vmm-id': string; pid: number };
    process.kill(vm.pid, 'SIGKILL');
    for (let i = 0; i < 50 && alive(vm.pid); i++) await new Promise((res) => setTimeout(res, 100));
    const ls = JSON.parse((await runCli(['ls', '--json'], { env })).stdout) as { running: boolean }[];
    expect(ls).toEqual([expect.objectContaining({ running: false })]);
    const p = await runCli(['purge'], { env });
    expect(p.stdout.trim()).toBe(vm['vmm-id']);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test('in the foreground the console streams and the guest command\'s exit code is firebuild\'s', async () => {
    // `sh` is the image's own (dash, found in the image's PATH), never busybox's applet, even with the
    // command's own -c among its arguments.
    const r = await runCli(['run', '--from', 'examples/hello:1', '--network', 'none', '--', 'sh', '-c', 'echo inside $(id -un) $(readlink /proc/$$/exe) $0; exit 7'], { env });
    expect(r.stdout).toContain('inside hello /usr/bin/dash sh');
    expect(r.stdout).toMatch(/FIREBUILD-EXIT code=7/);
    expect(r.code).toBe(7);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });
});

describe('the exit-code probe', () => {
  test('--wait-exit-code passes when the command exits with that code, fails with the console tail otherwise; the VM is gone either way', async () => {
    const ok = await runCli(['run', '--from', 'examples/hello:1', '--network', 'none', '--wait-exit-code', '7', '--wait-timeout', '120', '--', 'sh', '-c', 'echo probing; exit 7'], { env });
    expect({ code: ok.code, errors: errorLines(ok.stderr) }).toEqual({ code: 0, errors: [] });
    expect(ok.stderr).toMatch(/exit code probe passed exit-code=7/);
    const bad = await runCli(['run', '--from', 'examples/hello:1', '--network', 'none', '--wait-exit-code', '0', '--wait-timeout', '120', '--', 'sh', '-c', 'echo about to fail; exit 3'], { env });
    expect(bad.code).toBe(2);
    expect(errorLines(bad.stderr)).toEqual([expect.stringMatching(/^error: the command exited with code 3, expected 0: console tail: .*about to fail/)]);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });
});

describe('stopping and handing over', () => {
  test('kill stops the guest gracefully: the entrypoint gets its stop signal and its exit code is reported', async () => {
    const r = await runCli(['run', '--from', 'examples/hello:1', '--network', 'none', '--daemonize', '--', 'sh', '-c', 'trap "echo got-term; exit 3" TERM; while :; do sleep 1; done'], { env });
    expectJsonResult(r);
    const vm = JSON.parse(r.stdout) as { 'vmm-id': string; pid: number };
    const k = await runCli(['kill', '--vmm-id', vm['vmm-id']], { env });
    expect(k.code).toBe(0);
    expect(k.stderr).toMatch(/VM removed .*stop=graceful exit-code=3/);
    expect(alive(vm.pid)).toBe(false);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test('a guest that ignores its stop signal is forced after --shutdown-timeout, leaving nothing', async () => {
    const r = await runCli(['run', '--from', 'examples/hello:1', '--network', 'none', '--daemonize', '--', 'sh', '-c', 'trap "" TERM; while :; do sleep 1; done'], { env });
    const vm = JSON.parse(r.stdout) as { 'vmm-id': string; pid: number };
    const k = await runCli(['kill', '--vmm-id', vm['vmm-id'], '--shutdown-timeout', '3'], { env });
    expect(k.code).toBe(0);
    expect(k.stderr).toMatch(/stop=forced/);
    expect(alive(vm.pid)).toBe(false);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test("--init image: after firebuild's setup (hostname, environment) the image's own init runs as PID 1", async () => {
    const b = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.resolve('test/fixtures/images/image-init/Dockerfile'), '--tag', 'tests/image-init:1', '--free-space', '16M'], { env });
    expect(b.code).toBe(0);
    const r = await runCli(['run', '--from', 'tests/image-init:1', '--init', 'image', '--name', 'own', '--network', 'none', '--env', 'GREETING=handed-over'], { env });
    expect(r.stdout).toMatch(/FIREBUILD-START pid=1 init=\/sbin\/init/);
    expect(r.stdout).toContain('image-init-ran on own with GREETING=handed-over');
    expect(r.code).toBe(0);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });
});

describe('bad input: one line, non-zero exit, nothing leaked', () => {
  const cases: [string, () => Promise<string[]> | string[], RegExp][] = [
    ['unknown tag', () => ['run', '--from', 'examples/nope:1'], /^error: image examples\/nope:1 not found/],
    ['unknown kernel id', () => ['run', '--from', 'examples/hello:1', '--vmlinux-id', 'nope'], /^error: kernel nope not found/],
    ['invalid name', () => ['run', '--from', 'examples/hello:1', '--name', 'bad-name!'], /^error: invalid --name 'bad-name!'/],
    ['env file missing', () => ['run', '--from', 'examples/hello:1', '--env-file', path.join(work, 'nope.env')], /^error: env file .*nope\.env not found/],
    ['identity file not a public key', () => {
      const f = path.join(work, 'id_ed25519');
      fs.writeFileSync(f, '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n');
      return ['run', '--from', 'examples/hello:1', '--ssh-user', 'hello', '--identity-file', f];
    }, /^error: identity file .*id_ed25519 is not an SSH public key/],
    ['malformed port', () => ['run', '--from', 'examples/hello:1', '--port', '80'], /^error: malformed --port '80'/],
    ['port already in use', async () => {
      const srv = net.createServer();
      const port = await new Promise<number>((resolve) => srv.listen(0, '127.0.0.1', () => resolve((srv.address() as net.AddressInfo).port)));
      setTimeout(() => srv.close(), 15_000).unref();
      return ['run', '--from', 'examples/hello:1', '--port', `127.0.0.1:${port}:8080`];
    }, /^error: port 127\.0\.0\.1:\d+ is already in use/],
    ['a VM that never starts its init before the deadline', () => ['run', '--from', 'examples/hello:1', '--boot-timeout', '0.3'], /^error: the VM did not start its init within 0 s: console tail: /],
  ];
  // Where KVM is unusable (a PVM-backed /dev/kvm, or none at all), --accel kvm is one line with the reason.
  if (fs.existsSync('/sys/module/kvm_pvm') && fs.existsSync('/dev/kvm')) cases.push(['KVM requested but unusable (PVM)', () => ['run', '--from', 'examples/hello:1', '--accel', 'kvm'], /^error: KVM requested but unusable: \/dev\/kvm is backed by PVM/]);
  if (!fs.existsSync('/dev/kvm')) cases.push(['KVM requested but absent', () => ['run', '--from', 'examples/hello:1', '--accel', 'kvm'], /^error: KVM requested but unusable: \/dev\/kvm does not exist/]);

  test.each(cases)('%s', async (_n, args, want) => {
    const r = await runCli(await args(), { env });
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)).toEqual([expect.stringMatching(want)]);
    expect(fs.existsSync(runCache()) ? fs.readdirSync(runCache()) : []).toEqual([]);
  });
});
