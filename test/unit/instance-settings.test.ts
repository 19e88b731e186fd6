import { describe, expect, test } from '@jest/globals';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkNotEphemeral, parseCgroupParent, parseCniAliases, parseEphemeralRange, parsePortRange, rangesOverlap, resolveCniNetwork } from '../../src/profile/instance.js';
import { PROFILE_SCHEMA_VERSION, profileFromSettings, type Profile } from '../../src/profile/profile.js';
import { builtinDefaults, openStorage, resolveSettings } from '../../src/profile/settings.js';
import { parsePort, pickHostPorts } from '../../src/net/network.js';
import { UserError } from '../../src/util/errors.js';

/** P137, P138: the settings that keep runner instances of one host apart, from the environment, a profile or flags. */
const env = {
  FIREBUILD_HOME: '/inst/2', FIREBUILD_PORT_RANGE: '21000-21999', FIREBUILD_CGROUP_PARENT: 'firebuild-2',
  FIREBUILD_CNI_NETWORK_ALIASES: 'machines=machines-2, machine-builds=machine-builds-2', FIREBUILD_SHARED_KERNELS: '/shared/kernels',
};
const profile: Profile = {
  'schema-version': PROFILE_SCHEMA_VERSION, name: 'ci', 'chroot-base': '/srv/jailer', 'run-cache': '/inst/2/run', 'storage-provider': 'directory',
  'storage-provider-property-string': {}, 'storage-provider-property-int64': {}, 'tracing-enable': false, 'tracing-collector-host-port': '127.0.0.1:6831', 'tracing-log-enable': false,
};

describe('instance settings: flag > profile > environment > built-in default', () => {
  test('built-in defaults: no range, cgroup parent firebuild, no aliases, no shared kernels', () => {
    const s = resolveSettings({}, undefined, builtinDefaults({ FIREBUILD_HOME: '/def' }));
    expect(s.portRange).toBeUndefined();
    expect(s.cgroupParent).toBe('firebuild');
    expect(s.cniNetworkAliases).toEqual({});
    expect(s.storageProperties['shared-kernel-storage-root']).toBeUndefined();
  });

  test('from the environment (a runner instance .env), under a profile that does not set them; not written into a profile', () => {
    const s = resolveSettings({}, profile, builtinDefaults(env));
    expect(s.portRange).toEqual({ low: 21000, high: 21999 });
    expect(s.cgroupParent).toBe('firebuild-2');
    expect(s.cniNetworkAliases).toEqual({ machines: 'machines-2', 'machine-builds': 'machine-builds-2' });
    expect(s.storageProperties['shared-kernel-storage-root']).toBe('/shared/kernels');
    expect(s.origin['port-range']).toBe('default');
    const p = profileFromSettings('ci', s);
    expect(p['port-range']).toBeUndefined();
    expect(p['cgroup-parent']).toBeUndefined();
    expect(p['cni-network-aliases']).toBeUndefined();
    expect(p['storage-provider-property-string']['shared-kernel-storage-root']).toBeUndefined();
  });

  test('a profile beats the environment, flags beat both; profile-create keeps flags', () => {
    const prof: Profile = { ...profile, 'port-range': '22000-22099', 'cgroup-parent': 'fb/p', 'cni-network-aliases': { machines: 'machines-9' } };
    const s = resolveSettings({}, prof, builtinDefaults(env));
    expect([s.portRange, s.cgroupParent, s.cniNetworkAliases]).toEqual([{ low: 22000, high: 22099 }, 'fb/p', { machines: 'machines-9' }]);
    const f = resolveSettings({ portRange: '23000-23009', cgroupParent: 'fb-3', cniNetworkAlias: ['machines=machines-3'] }, prof, builtinDefaults(env));
    expect([f.portRange, f.cgroupParent, f.cniNetworkAliases]).toEqual([{ low: 23000, high: 23009 }, 'fb-3', { machines: 'machines-3' }]);
    const p = profileFromSettings('x', f);
    expect([p['port-range'], p['cgroup-parent'], p['cni-network-aliases']]).toEqual(['23000-23009', 'fb-3', { machines: 'machines-3' }]);
  });

  test.each([
    ['FIREBUILD_PORT_RANGE', '30000', /^malformed port range '30000' \(FIREBUILD_PORT_RANGE\): give LOW-HIGH/],
    ['FIREBUILD_PORT_RANGE', '20999-20000', /^malformed port range '20999-20000'/],
    ['FIREBUILD_PORT_RANGE', '80-90', /^malformed port range '80-90'.*1024 <= LOW/],
    ['FIREBUILD_PORT_RANGE', '60000-70000', /^malformed port range/],
    ['FIREBUILD_CGROUP_PARENT', '../escape', /^malformed cgroup parent '\.\.\/escape' \(FIREBUILD_CGROUP_PARENT\)/],
    ['FIREBUILD_CGROUP_PARENT', '/sys/fs/cgroup/x', /^malformed cgroup parent/],
    ['FIREBUILD_CNI_NETWORK_ALIASES', 'machines', /^malformed CNI network alias 'machines' \(FIREBUILD_CNI_NETWORK_ALIASES\): give NAME=NETWORK/],
    ['FIREBUILD_CNI_NETWORK_ALIASES', 'a=b,a=c', /^CNI network alias a is given twice/],
    ['FIREBUILD_SHARED_KERNELS', 'rel/kernels', /^FIREBUILD_SHARED_KERNELS 'rel\/kernels' is not an absolute path/],
  ])('a bad %s %j is one line naming it', (key, value, msg) => {
    expect(() => builtinDefaults({ [key]: value })).toThrow(UserError);
    expect(() => builtinDefaults({ [key]: value })).toThrow(msg);
  });

  test('bad values from a profile or a flag name their source', () => {
    expect(() => resolveSettings({}, { ...profile, 'port-range': 'x' }, builtinDefaults({}))).toThrow("malformed port range 'x' (profile ci's port-range)");
    expect(() => resolveSettings({ cgroupParent: 'a/../b' }, undefined, builtinDefaults({}))).toThrow("malformed cgroup parent 'a/../b' (--cgroup-parent)");
  });
});

describe('port ranges', () => {
  test('overlap and the kernel ephemeral range', () => {
    expect(rangesOverlap(parsePortRange('20000-20999', 'a'), parsePortRange('21000-21999', 'b'))).toBe(false);
    expect(rangesOverlap(parsePortRange('20000-21000', 'a'), parsePortRange('21000-21999', 'b'))).toBe(true);
    expect(parseEphemeralRange('32768\t60999\n')).toEqual({ low: 32768, high: 60999 });
    expect(() => checkNotEphemeral({ low: 30000, high: 33000 }, { low: 32768, high: 60999 }, 'FIREBUILD_PORT_RANGE'))
      .toThrow("port range 30000-33000 (FIREBUILD_PORT_RANGE) overlaps the kernel's ephemeral ports 32768-60999 (net.ipv4.ip_local_port_range), which outgoing connections take: pick a range below 32768 or above 60999");
    expect(() => checkNotEphemeral({ low: 20000, high: 20999 }, { low: 32768, high: 60999 }, 'x')).not.toThrow();
  });

  test('auto ports are picked in the range, each its own, skipping a taken one; fixed ports outside it are refused', async () => {
    const range = { low: 24100, high: 24102 };
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(24101, '127.0.0.1', () => r()));
    try {
      const picked = await pickHostPorts([parsePort('auto:80'), parsePort('auto:81')], range);
      const got = picked.map((p) => p.hostPort).sort();
      expect(got).toEqual([24100, 24102]);
      await expect(pickHostPorts([parsePort('auto:80'), parsePort('auto:81'), parsePort('auto:82')], range))
        .rejects.toThrow('no free TCP port on 127.0.0.1 in the port range 24100-24102: stop VMs that hold ports of it (firebuild ls) or widen the range');
      await expect(pickHostPorts([parsePort('8080:80')], range)).rejects.toThrow('host port 8080 is outside the port range 24100-24102: publish auto:80 (a free port of the range) or a host port in it');
      expect((await pickHostPorts([parsePort('24102:80')], range))[0]!.hostPort).toBe(24102);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });
});

describe('CNI network aliases and cgroup parents', () => {
  test('a shared name maps to the instance network; its own names pass; any other is refused', () => {
    const a = parseCniAliases(['machines=machines-2', 'machine-builds=machine-builds-2'], 'x');
    expect(resolveCniNetwork('machines', a)).toBe('machines-2');
    expect(resolveCniNetwork('machine-builds-2', a)).toBe('machine-builds-2');
    expect(() => resolveCniNetwork('machines-1', a)).toThrow("CNI network 'machines-1' is not one of this runner's networks (cni-network-aliases: machines=machines-2, machine-builds=machine-builds-2): ask for machines or machine-builds");
    expect(resolveCniNetwork('anything', {})).toBe('anything');
    // Names of Object.prototype are not aliases.
    for (const proto of ['constructor', 'toString', '__proto__']) expect(() => resolveCniNetwork(proto, a)).toThrow(/is not one of this runner's networks/);
  });
  test('cgroup parents: relative names only', () => {
    expect(parseCgroupParent('firebuild/runner-2', 'x')).toBe('firebuild/runner-2');
    for (const bad of ['', 'a//b', '.', 'a/./b', 'a b', 'a/b/c/d/e']) expect(() => parseCgroupParent(bad, 'x')).toThrow(/^malformed cgroup parent/);
  });
});

describe('a shared kernel directory, read only', () => {
  test('kernels of the shared root are found after the store own, listed once, and never removed through the store', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fb-shared-'));
    try {
      const vmlinux = path.join(dir, 'vmlinux');
      await fsp.writeFile(vmlinux, 'not really a kernel');
      const shared = openStorage(resolveSettings({}, undefined, builtinDefaults({ FIREBUILD_HOME: path.join(dir, 'shared-home') })));
      await shared.importKernel('default', vmlinux);
      await shared.importKernel('other', vmlinux);
      const s = resolveSettings({}, undefined, builtinDefaults({ FIREBUILD_HOME: path.join(dir, 'inst'), FIREBUILD_SHARED_KERNELS: path.join(dir, 'shared-home', 'kernels') }));
      const own = openStorage(s);
      expect((await own.getKernel('default')).dir).toBe(path.join(dir, 'shared-home', 'kernels', 'default'));
      await own.importKernel('other', vmlinux, { cmdline: 'own' });
      expect((await own.getKernel('other')).dir).toBe(path.join(dir, 'inst', 'kernels', 'other'));
      expect((await own.listKernels()).map((k) => k.dir)).toEqual([path.join(dir, 'shared-home', 'kernels', 'default'), path.join(dir, 'inst', 'kernels', 'other')]);
      await expect(own.removeKernel('default')).rejects.toThrow(`kernel default is in the shared kernel directory ${path.join(dir, 'shared-home', 'kernels')} (read only here): remove it there as its owner`);
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
