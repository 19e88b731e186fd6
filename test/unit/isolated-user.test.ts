import { describe, expect, test } from '@jest/globals';
import type * as os from 'node:os';
import { NS_CIDR, blockedRoutes, defaultRouteDevs, interfacesFromIpJson, isolatedArgv, upstreamNameservers } from '../../src/net/isolated-user.js';

const v4 = (address: string, cidr: string, internal = false): os.NetworkInterfaceInfo => ({ address, netmask: '', family: 'IPv4', mac: '00:00:00:00:00:00', internal, cidr });
const v6 = (address: string): os.NetworkInterfaceInfo => ({ address, netmask: '', family: 'IPv6', mac: '00:00:00:00:00:00', internal: false, cidr: `${address}/64`, scopeid: 0 });

describe('isolated user-mode networking: argv', () => {
  test('sh runs unshare piped into slirp4netns; the routes, then the command, follow as arguments', () => {
    const [cmd, args] = isolatedArgv({ dir: '/run/c/vm1', routes: ['169.254.0.0/16', '192.0.2.2/32'], command: ['qemu-system-x86_64', '-M', 'microvm'] });
    expect(cmd).toBe('/bin/sh');
    expect(args[0]).toBe('-c');
    expect(args.slice(2, 3)).toEqual(['fb-net']);
    expect(args.slice(3, 4)).toEqual(['/run/c/vm1']);
    expect(args.slice(5)).toEqual(['2', '169.254.0.0/16', '192.0.2.2/32', 'qemu-system-x86_64', '-M', 'microvm']);
    const outer = args[1] as string;
    const inner = args[4] as string;
    expect(outer).toContain('unshare --user --map-root-user --net --mount --');
    for (const f of ['--disable-host-loopback', '--disable-dns', `--cidr=${NS_CIDR}`, '--configure', '--exit-fd=0', '--ready-fd=3', '--api-socket=']) expect(outer).toContain(f);
    // The inner waits for slirp4netns before it adds the routes, binds resolv.conf, then execs the command.
    const order = ['echo $$', 'read -r ok', 'ip route add unreachable', 'mount --bind', 'exec "$@"'].map((s) => inner.indexOf(s));
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
  });

  test('no routes: the count is 0 and the command follows', () => {
    expect(isolatedArgv({ dir: '/d', routes: [], command: ['true'] })[1].slice(5)).toEqual(['0', 'true']);
  });

  test('an empty command is a programming error', () => {
    expect(() => isolatedArgv({ dir: '/d', routes: [], command: [] })).toThrow();
  });
});

describe('isolated user-mode networking: what the namespace must not reach', () => {
  test.each<[string, NodeJS.Dict<os.NetworkInterfaceInfo[]>, string[], string[]]>([
    ['metadata only when the host has nothing but loopback', { lo: [v4('127.0.0.1', '127.0.0.1/8', true)] }, [], ['169.254.0.0/16']],
    ['the default-route interface: its address, not its subnet', { eth0: [v4('192.0.2.2', '192.0.2.2/24'), v6('fd00::2')] }, ['eth0'], ['169.254.0.0/16', '192.0.2.2/32']],
    ['a host-only bridge: its address and its subnet', { eth0: [v4('192.0.2.2', '192.0.2.2/24')], docker0: [v4('172.17.0.1', '172.17.0.1/16')] }, ['eth0'], ['169.254.0.0/16', '192.0.2.2/32', '172.17.0.1/32', '172.17.0.0/16']],
    ['a test veth /30', { 'fbt-h': [v4('10.213.0.1', '10.213.0.1/30')] }, [], ['169.254.0.0/16', '10.213.0.1/32', '10.213.0.0/30']],
    ['a /32 address adds no subnet', { wg0: [v4('10.9.9.9', '10.9.9.9/32')] }, [], ['169.254.0.0/16', '10.9.9.9/32']],
    ['several addresses on one interface', { eth0: [v4('192.0.2.2', '192.0.2.2/24'), v4('198.51.100.7', '198.51.100.7/24')] }, ['eth0'], ['169.254.0.0/16', '192.0.2.2/32', '198.51.100.7/32']],
  ])('%s', (_n, interfaces, defaultDevs, want) => {
    expect(blockedRoutes({ interfaces, defaultDevs })).toEqual(want);
  });

  test('interfaces from `ip -j -4 addr`, down ones included (os.networkInterfaces() leaves them out, their addresses still answer)', () => {
    const text = JSON.stringify([
      { ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8 }] },
      { ifname: 'eth0', operstate: 'UP', addr_info: [{ family: 'inet', local: '192.0.2.2', prefixlen: 24 }] },
      { ifname: 'docker0', operstate: 'DOWN', addr_info: [{ family: 'inet', local: '172.17.0.1', prefixlen: 16 }] },
      { ifname: 'ifb0' },
    ]);
    expect(blockedRoutes({ interfaces: interfacesFromIpJson(text), defaultDevs: ['eth0'] })).toEqual(['169.254.0.0/16', '192.0.2.2/32', '172.17.0.1/32', '172.17.0.0/16']);
  });

  test('default-route interfaces from /proc/net/route', () => {
    const text = [
      'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
      'eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0',
      'docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0',
      'eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
    ].join('\n');
    expect(defaultRouteDevs(text)).toEqual(['eth0']);
    expect(defaultRouteDevs('')).toEqual([]);
  });

  test.each<[string, string, string[], boolean]>([
    ['upstream resolvers are kept', 'nameserver 10.255.255.53\nnameserver 192.0.2.53\n', ['10.255.255.53', '192.0.2.53'], false],
    ['a loopback stub is dropped and noted', 'nameserver 127.0.0.53\noptions edns0\n', [], true],
    ['IPv6 resolvers are dropped (the namespace has no IPv6 way out)', 'nameserver fd00::3\nnameserver 8.8.8.8\n', ['8.8.8.8'], false],
    ['comments and other lines are ignored', '# nameserver 1.1.1.1\nsearch example\n', [], false],
  ])('resolv.conf: %s', (_n, text, servers, loopback) => {
    expect(upstreamNameservers(text)).toEqual({ servers, loopback });
  });
});
