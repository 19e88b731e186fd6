import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GUEST_CID, VSOCK_UDS, apiRequests, configFile, jailerArgv, jailRoot, stopRequest, type FirecrackerVm } from '../../src/vmm/firecracker.js';
import { jailerSocketPath } from '../../src/vmm/jail-paths.js';
import { SCHEMA, bodyDefinition, validate } from '../helpers/firecracker-schema.js';

/** No Firecracker binary can run here: every config file and API body is checked against the official schema. */
const vms: [string, FirecrackerVm][] = [
  ['minimal', { kernel: '/vmlinux', bootArgs: 'console=ttyS0 reboot=k panic=1', rootfs: '/rootfs.ext4', vcpus: 1, memMib: 128 }],
  ['full', {
    kernel: 'vmlinux', initrd: 'initrd', bootArgs: 'console=ttyS0 init=/.firebuild/init', rootfs: 'rootfs.ext4',
    drives: [{ id: 'config', path: 'config.img', readOnly: true }], vcpus: 2, memMib: 512,
    network: [{ ifaceId: 'eth0', tap: 'fb0abc', mac: '02:fc:00:00:00:01' }], mmds: true, logPath: 'fc.log', metricsPath: 'fc.metrics', serialOut: '/serial.log',
  }],
  // A build step's ssh agents (RUN --mount=type=ssh) reach the host over vsock.
  ['vsock', { kernel: '/vmlinux', bootArgs: 'console=ttyS0', rootfs: '/rootfs.ext4', vcpus: 1, memMib: 128, vsock: { guestCid: GUEST_CID, udsPath: VSOCK_UDS } }],
];

describe('Firecracker config files validate as FullVmConfiguration', () => {
  test.each(vms)('%s', (_n, vm) => {
    const cfg = configFile(vm);
    expect(validate('FullVmConfiguration', cfg)).toBeNull();
    expect(cfg['boot-source']).toMatchObject({ kernel_image_path: vm.kernel, boot_args: vm.bootArgs });
  });

  test("Firecracker's own example validates, and a misspelled field does not", () => {
    const example = JSON.parse(fs.readFileSync(path.join(path.dirname(SCHEMA), 'vm_config.example.json'), 'utf8'));
    // The example spells optional objects as null, which the schema leaves untyped: drop them.
    const cleaned = JSON.parse(JSON.stringify(example, (_k, v) => (v === null ? undefined : v)));
    expect(validate('FullVmConfiguration', cleaned)).toBeNull();
    const bad = configFile(vms[0]![1]) as { 'boot-source': Record<string, unknown> };
    bad['boot-source'] = { kernel_image: '/vmlinux' };
    expect(validate('FullVmConfiguration', bad)).not.toBeNull();
  });
});

describe('Firecracker API requests validate against their definitions and paths', () => {
  test.each(vms)('%s', (_n, vm) => {
    const reqs = apiRequests(vm, { firebuild: { name: 'vm1' } });
    expect(reqs.at(-1)?.body).toEqual({ action_type: 'InstanceStart' });
    for (const r of [...reqs, stopRequest()]) {
      expect({ path: r.path, errors: validate(r.definition, r.body) }).toEqual({ path: r.path, errors: null });
      // The path exists in the API with that method and takes that definition as its body.
      expect(bodyDefinition(r.method, r.path)).toBe(r.definition);
    }
  });
});

describe('the vsock device (RUN --mount=type=ssh on Firecracker)', () => {
  test('PUT /vsock before InstanceStart, and the config file\'s vsock: guest CID 3, the host socket in the jail', () => {
    const vm = vms.find(([n]) => n === 'vsock')![1];
    const reqs = apiRequests(vm);
    const i = reqs.findIndex((r) => r.path === '/vsock');
    expect(reqs[i]).toEqual({ method: 'PUT', path: '/vsock', definition: 'Vsock', body: { guest_cid: 3, uds_path: '/vsock.sock' } });
    expect(i).toBeLessThan(reqs.length - 1);
    expect(configFile(vm).vsock).toEqual({ guest_cid: 3, uds_path: '/vsock.sock' });
    // A CID the schema refuses (0-2 are reserved) fails the same check.
    expect(validate('Vsock', { guest_cid: 2, uds_path: '/vsock.sock' })).not.toBeNull();
  });
});

describe('jailer argv', () => {
  const base = { jailer: '/usr/bin/jailer', firecracker: '/usr/bin/firecracker', id: 'abc123', uid: 1000, gid: 1000, chrootBase: '/srv/jailer' };
  test.each<[string, Parameters<typeof jailerArgv>[0], string[]]>([
    ['config file, daemonized, with netns and a parent cgroup', { ...base, netns: '/var/run/netns/fb-abc123', parentCgroup: 'firebuild', daemonize: true, newPidNs: true, configFile: '/config.json' },
      ['--id', 'abc123', '--exec-file', '/usr/bin/firecracker', '--uid', '1000', '--gid', '1000', '--chroot-base-dir', '/srv/jailer', '--netns', '/var/run/netns/fb-abc123', '--cgroup-version', '2', '--parent-cgroup', 'firebuild', '--daemonize', '--new-pid-ns', '--', '--config-file', '/config.json']],
    ['API socket, new PID namespace, cgroup settings', { ...base, newPidNs: true, cgroups: ['memory.max=402653184', 'cpu.weight=100'], apiSock: '/run/firecracker.socket' },
      ['--id', 'abc123', '--exec-file', '/usr/bin/firecracker', '--uid', '1000', '--gid', '1000', '--chroot-base-dir', '/srv/jailer', '--cgroup-version', '2', '--cgroup', 'memory.max=402653184', '--cgroup', 'cpu.weight=100', '--new-pid-ns', '--', '--api-sock', '/run/firecracker.socket']],
    ['API socket, foreground', { ...base, apiSock: '/run/firecracker.socket' },
      ['--id', 'abc123', '--exec-file', '/usr/bin/firecracker', '--uid', '1000', '--gid', '1000', '--chroot-base-dir', '/srv/jailer', '--cgroup-version', '2', '--', '--api-sock', '/run/firecracker.socket']],
  ])('%s', (_n, o, argv) => expect(jailerArgv(o)).toEqual(argv));

  test('ids the jailer would refuse are refused first', () => {
    expect(() => jailerArgv({ ...base, id: 'bad/id' })).toThrow(/must be 1-64/);
  });

  test('the jail root and API socket path agree with the profile check', () => {
    expect(jailRoot('/srv/jailer', '/usr/bin/firecracker', 'abc')).toBe('/srv/jailer/firecracker/abc/root');
    expect(jailerSocketPath('/srv/jailer', '/usr/bin/firecracker', 'abc')).toBe(`${jailRoot('/srv/jailer', '/usr/bin/firecracker', 'abc')}/run/firecracker.socket`);
  });
});
