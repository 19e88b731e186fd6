import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { cgroup2Mount } from '../../src/runtime/cgroup.js';
import { REPO, lines, runCli, tempDir, expectJsonResult } from '../helpers/cli.js';
import { alive, importDebianCloud, killAll } from '../helpers/vm.js';
import { annotations, runAction, runPost } from '../helpers/runner.js';
import { bodyDefinition, validate } from '../helpers/firecracker-schema.js';

/**
 * The Firecracker backend's process management on real parts — jail layout, hard links, the VM's cgroup
 * v2 (cgroup.kill), the API socket client, graceful stop, teardown — with test doubles for the two
 * binaries that cannot run here (test/fixtures/firecracker: no usable KVM). Every API body and config
 * file they receive is validated against the official schema. The real boot is verified on KVM hosts.
 */
const FC = path.join(REPO, 'test', 'fixtures', 'firecracker', 'firecracker');
const JAILER = path.join(REPO, 'test', 'fixtures', 'firecracker', 'jailer');
let work: string;
let jails: string;
let env: NodeJS.ProcessEnv;
let cgroupRoot: string | undefined;
const runCache = (): string => path.join(work, 'home', 'run');
const fcFlags = (): string[] => ['--backend', 'firecracker', '--binary-firecracker', FC, '--binary-jailer', JAILER, '--chroot-base', jails];
type Started = { 'vmm-id': string; pid: number; 'serial-log': string };

beforeAll(async () => {
  work = await tempDir();
  jails = path.join(work, 'jails');
  fs.mkdirSync(jails);
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  const b = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.resolve('examples/hello/Dockerfile'), '--tag', 'examples/hello:1', '--free-space', '32M'], { env });
  expect(b.code).toBe(0);
  expect(await importDebianCloud(env, 'k', false)).toBe(0);
  const m = await cgroup2Mount();
  cgroupRoot = m ? path.join(m, 'firebuild') : undefined;
});
afterAll(async () => {
  await killAll(runCache(), env, { shutdownTimeout: 1 });
  fs.rmSync(work, { recursive: true, force: true });
});

function jailOf(id: string): string {
  return path.join(jails, 'firecracker', id);
}

describe('Firecracker backend (test doubles for firecracker and the jailer)', () => {
  test('API mode: jailer argv, the VM\'s own files hard-linked, every request valid against the schema, cgroup, graceful stop and full teardown', async () => {
    const r = await runCli(['run', '--from', 'examples/hello:1', ...fcFlags(), '--mem', '128', '--cpu', '2', '--daemonize'], { env });
    expectJsonResult(r);
    const vm = JSON.parse(r.stdout) as Started;
    const id = vm['vmm-id'];
    const root = path.join(jailOf(id), 'root');
    expect(JSON.parse(fs.readFileSync(path.join(jailOf(id), 'jailer-argv.json'), 'utf8'))).toEqual([
      '--id', id, '--exec-file', FC, '--uid', '65534', '--gid', '65534', '--chroot-base-dir', jails, '--cgroup-version', '2',
      '--daemonize', '--new-pid-ns', '--', '--api-sock', '/run/firecracker.socket',
    ]);
    const reqs = lines(fs.readFileSync(path.join(root, 'api-requests.jsonl'), 'utf8')).map((l) => JSON.parse(l) as { method: string; path: string; body: Record<string, unknown> });
    expect(reqs.map((q) => q.path)).toEqual(['/serial', '/machine-config', '/boot-source', '/drives/rootfs', '/drives/disk0', '/actions']);
    for (const q of reqs) {
      const def = bodyDefinition(q.method, q.path);
      expect({ path: q.path, def, errors: def ? validate(def, q.body) : 'no such request' }).toEqual({ path: q.path, def, errors: null });
    }
    expect(reqs[1]!.body).toEqual({ vcpu_count: 2, mem_size_mib: 128, smt: false });
    // The rootfs in the jail is the run cache's per-VM copy (a hard link), owned by the jail's uid.
    const inJail = fs.statSync(path.join(root, 'rootfs.ext4'));
    expect(inJail.ino).toBe(fs.statSync(path.join(runCache(), id, 'rootfs.ext4')).ino);
    expect([inJail.uid, inJail.gid]).toEqual([65534, 65534]);
    expect(fs.readFileSync(vm['serial-log'], 'utf8')).toContain('FIREBUILD-START');
    const helper = Number(fs.readFileSync(path.join(root, 'helper.pid'), 'utf8'));
    if (cgroupRoot) expect(fs.readFileSync(path.join(cgroupRoot, id, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number).sort()).toEqual([vm.pid, helper].sort());

    const k = await runCli(['kill', '--vmm-id', id], { env });
    expect(k.code).toBe(0);
    expect(k.stderr).toMatch(/VM removed .*stop=graceful exit-code=0/);
    expect(fs.readFileSync(path.join(jails, 'mock-events.log'), 'utf8')).toContain(`SendCtrlAltDel ${id}`);
    expect(alive(vm.pid)).toBe(false);
    expect(fs.existsSync(jailOf(id))).toBe(false);
    if (cgroupRoot) expect(fs.existsSync(path.join(cgroupRoot, id))).toBe(false);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test('the store\'s kernel, initrd and rootfs are never the jail\'s: the jail holds read-only copies owned by the jail user; the store keeps owner, mode, inode and one link', async () => {
    expect(await importDebianCloud(env, 'ki', true)).toBe(0);
    try {
      // Every file of the store (kernels, images), outside the run cache: what a jail must never share.
      const storeFiles = (): string[] => {
        const out: string[] = [];
        const walk = (d: string): void => {
          for (const e of fs.readdirSync(d, { withFileTypes: true })) {
            const p = path.join(d, e.name);
            if (p === runCache()) continue;
            if (e.isDirectory()) walk(p);
            else if (e.isFile() && /^(vmlinux|initrd|rootfs\.ext4)$/.test(e.name)) out.push(p);
          }
        };
        walk(path.join(work, 'home'));
        return out.sort();
      };
      const facts = (): Record<string, string> => Object.fromEntries(storeFiles().map((f) => {
        const st = fs.statSync(f);
        return [path.relative(work, f), `uid=${st.uid} gid=${st.gid} mode=${(st.mode & 0o7777).toString(8)} ino=${st.ino} nlink=${st.nlink}`];
      }));
      const before = facts();
      expect(Object.keys(before).filter((f) => /\/ki\//.test(f)).map((f) => path.basename(f)).sort()).toEqual(['initrd', 'vmlinux']);
      expect(Object.values(before).every((v) => /uid=0 gid=0 .*nlink=1$/.test(v))).toBe(true);

      const r = await runCli(['run', '--from', 'examples/hello:1', ...fcFlags(), '--vmlinux-id', 'ki', '--daemonize'], { env });
      expectJsonResult(r);
      const id = (JSON.parse(r.stdout) as Started)['vmm-id'];
      const root = path.join(jailOf(id), 'root');
      const storeInodes = new Set(storeFiles().map((f) => fs.statSync(f).ino));
      const k = storeFiles().find((f) => /\/ki\/(\.c-[^/]+\/)?vmlinux$/.test(f))!; // the store keeps content in .c-*/ behind .current
      const i = storeFiles().find((f) => /\/ki\/(\.c-[^/]+\/)?initrd$/.test(f))!;
      for (const [name, src] of [['vmlinux', k], ['initrd', i]] as const) {
        const st = fs.statSync(path.join(root, name));
        expect({ name, shared: storeInodes.has(st.ino), uid: st.uid, gid: st.gid, mode: (st.mode & 0o7777).toString(8), nlink: st.nlink })
          .toEqual({ name, shared: false, uid: 65534, gid: 65534, mode: '400', nlink: 1 });
        expect(fs.readFileSync(path.join(root, name)).equals(fs.readFileSync(src))).toBe(true);
      }
      expect(storeInodes.has(fs.statSync(path.join(root, 'rootfs.ext4')).ino)).toBe(false);
      expect(facts()).toEqual(before);

      const kr = await runCli(['kill', '--vmm-id', id], { env });
      expect(kr.code).toBe(0);
      expect(facts()).toEqual(before);
      expect(fs.existsSync(jailOf(id))).toBe(false);
    } finally {
      // Later tests boot with the one kernel 'k': never leave 'ki' behind, whatever failed.
      expect((await runCli(['kernel', 'rm', 'ki'], { env })).code).toBe(0);
    }
  });

  test('config-file mode: the config file validates as FullVmConfiguration and the console reaches the serial log', async () => {
    const r = await runCli(['run', '--from', 'examples/hello:1', ...fcFlags(), '--firecracker-mode', 'config-file', '--daemonize'], { env });
    expectJsonResult(r);
    const vm = JSON.parse(r.stdout) as Started;
    const id = vm['vmm-id'];
    const argv = JSON.parse(fs.readFileSync(path.join(jailOf(id), 'jailer-argv.json'), 'utf8')) as string[];
    expect(argv).not.toContain('--daemonize');
    expect(argv.slice(argv.indexOf('--'))).toEqual(['--', '--config-file', '/vm-config.json', '--api-sock', '/run/firecracker.socket']);
    const cfg = JSON.parse(fs.readFileSync(path.join(jailOf(id), 'root', 'vm-config.json'), 'utf8'));
    expect(validate('FullVmConfiguration', cfg)).toBeNull();
    expect(cfg['boot-source'].boot_args).toMatch(/reboot=k .*init=\/\.firebuild\/init/);
    expect(fs.readFileSync(vm['serial-log'], 'utf8')).toMatch(/mock-firecracker: kernel \/vmlinux[\s\S]*FIREBUILD-START/);
    const k = await runCli(['kill', '--vmm-id', id], { env });
    expect(k.stderr).toMatch(/stop=graceful/);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test('a wedged guest: kill forces it after --shutdown-timeout, and cgroup.kill reaps every process of the VM', async () => {
    const marker = path.join(jails, 'ignore-ctrl-alt-del');
    fs.writeFileSync(marker, '');
    try {
      const r = await runCli(['run', '--from', 'examples/hello:1', ...fcFlags(), '--daemonize'], { env });
      const vm = JSON.parse(r.stdout) as Started;
      const helper = Number(fs.readFileSync(path.join(jailOf(vm['vmm-id']), 'root', 'helper.pid'), 'utf8'));
      const k = await runCli(['kill', '--vmm-id', vm['vmm-id'], '--shutdown-timeout', '1'], { env });
      expect(k.code).toBe(0);
      expect(k.stderr).toMatch(/stop=forced/);
      expect([alive(vm.pid), cgroupRoot ? alive(helper) : false]).toEqual([false, false]);
      expect(fs.existsSync(jailOf(vm['vmm-id']))).toBe(false);
    } finally {
      fs.rmSync(marker, { force: true });
    }
  });

  test('a Firecracker process killed with SIGKILL is cleaned by purge: jail, cgroup, run cache', async () => {
    const r = await runCli(['run', '--from', 'examples/hello:1', ...fcFlags(), '--daemonize'], { env });
    const vm = JSON.parse(r.stdout) as Started;
    process.kill(vm.pid, 'SIGKILL');
    for (let i = 0; i < 50 && alive(vm.pid); i++) await new Promise((res) => setTimeout(res, 100));
    const p = await runCli(['purge'], { env });
    expect(p.stdout.trim()).toBe(vm['vmm-id']);
    expect(fs.existsSync(jailOf(vm['vmm-id']))).toBe(false);
    if (cgroupRoot) expect(fs.existsSync(path.join(cgroupRoot, vm['vmm-id']))).toBe(false);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test('a slow boot within its own deadline, then the probes with theirs: the probes\' deadline counts from the boot (run, and the smoke-test action)', async () => {
    // The double's boot takes 3 s (the start line comes 3 s after InstanceStart): longer than the probes'
    // deadline of 1 s, well within the boot's. The probed service (a TCP greeting) is up all along.
    const slowBoot = path.join(jails, 'boot-delay-ms');
    fs.writeFileSync(slowBoot, '3000');
    const conns: net.Socket[] = [];
    const service = net.createServer((c) => { conns.push(c); c.write('SSH-2.0-test\r\n'); });
    const port = await new Promise<number>((r) => service.listen(0, '127.0.0.1', () => r((service.address() as net.AddressInfo).port)));
    try {
      const r = await runCli(['run', '--from', 'examples/hello:1', ...fcFlags(), '--daemonize', '--boot-timeout', '300', '--wait-tcp', String(port), '--wait-timeout', '1'], { env });
      expectJsonResult(r);
      expect((await runCli(['kill', '--vmm-id', (JSON.parse(r.stdout) as Started)['vmm-id']], { env })).code).toBe(0);

      // The action as the runner runs it, its Firecracker doubles named by a profile (as setup writes one).
      const conf = path.join(work, 'profiles');
      expect((await runCli(['profile-create', '--profile', 'fc', '--profile-conf-dir', conf, '--binary-firecracker', FC, '--binary-jailer', JAILER, '--chroot-base', jails], { env })).code).toBe(0);
      const actionEnv = { ...env, FIREBUILD_PROFILE_CONF_DIR: conf, FIREBUILD_PROFILE: 'fc' };
      const smoke = await runAction('smoke-test/index.js', { tag: 'examples/hello:1', backend: 'firecracker', 'wait-tcp': String(port), timeout: '1', 'boot-timeout': '300' }, actionEnv);
      // With one deadline for both (the old `timeout`), this boot failed: "the VM did not start its init within 1 s".
      expect({ code: smoke.code, errors: annotations(smoke.stdout) }).toEqual({ code: 0, errors: [] });
      expect(smoke.summary).toMatch(new RegExp(`<code>tcp [^<]*:${port}</code>`));
      expect((await runPost('smoke-test/post/index.js', smoke.state, actionEnv)).code).toBe(0);

      // The boot's own deadline still holds: a boot slower than boot-timeout fails as a boot, before any probe.
      const late = await runAction('smoke-test/index.js', { tag: 'examples/hello:1', backend: 'firecracker', 'wait-tcp': String(port), timeout: '300', 'boot-timeout': '1' }, actionEnv);
      expect({ code: late.code, errors: annotations(late.stdout) }).toEqual({ code: 1, errors: [expect.stringMatching(/^::error::the VM did not start its init within 1 s: console tail: /)] });
      expect((await runPost('smoke-test/post/index.js', late.state, actionEnv)).code).toBe(0);
      expect(fs.readdirSync(runCache())).toEqual([]);
    } finally {
      fs.rmSync(slowBoot, { force: true });
      conns.forEach((c) => c.destroy());
      service.close();
    }
  });

  test.each([
    ['user networking', ['--network', 'user'], /^error: --network user is QEMU only/],
    ['no binaries', ['--backend', 'firecracker'], /^error: the Firecracker backend needs --binary-firecracker and --binary-jailer/],
    ['a jailer that fails', ['--backend', 'firecracker', '--binary-firecracker', FC, '--binary-jailer', '/bin/false'], /^error: the jailer failed \(exit 1\)/],
  ])('bad input: %s is one line, exit 2, nothing left', async (_n, flags, want) => {
    const args = flags.includes('--binary-jailer') || flags[0] === '--backend' ? flags : [...fcFlags(), ...flags];
    const r = await runCli(['run', '--from', 'examples/hello:1', ...args, '--chroot-base', jails, '--daemonize'], { env });
    expect(r.code).toBe(2);
    expect(lines(r.stderr).filter((l) => l.startsWith('error:'))).toEqual([expect.stringMatching(want)]);
    expect(fs.readdirSync(runCache())).toEqual([]);
    expect(fs.existsSync(path.join(jails, 'firecracker')) ? fs.readdirSync(path.join(jails, 'firecracker')) : []).toEqual([]);
  });
});
