import { describe, expect, test } from '@jest/globals';
import * as net from 'node:net';
import { hostReachableIp, parseProbePort, smoke } from '../../src/commands/smoke.js';
import type { BootRequest, VmContext } from '../../src/commands/vm-boot.js';
import type { VmState } from '../../src/runtime/state.js';
import { formatPort, parsePort, pickHostPorts } from '../../src/net/network.js';

/** Published ports: the `--port`/`ports` syntax with auto host ports, and the free ports the launch picks for them. */
describe('published ports', () => {
  test('parsePort: a host port of 0 or auto is hostPort 0; anything else malformed is one line', () => {
    expect(parsePort('auto:8080')).toEqual({ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 0, guestPort: 8080 });
    expect(parsePort('127.0.0.1:0:8080/udp')).toEqual({ proto: 'udp', hostAddr: '127.0.0.1', hostPort: 0, guestPort: 8080 });
    expect(parsePort('0:53', '0.0.0.0')).toEqual({ proto: 'tcp', hostAddr: '0.0.0.0', hostPort: 0, guestPort: 53 });
    expect(parsePort('10.1.2.3:8080:80')).toEqual({ proto: 'tcp', hostAddr: '10.1.2.3', hostPort: 8080, guestPort: 80 });
    for (const bad of ['auto:0', '8080:auto', 'auto', '127.0.0.1:auto', '70000:80', '00:80']) expect(() => parsePort(bad)).toThrow(/^malformed --port/);
    expect(formatPort(parsePort('127.0.0.1:40123:8080'))).toBe('127.0.0.1:40123:8080/tcp');
  });

  test('pickHostPorts gives each auto port its own free port (bindable right after), fixed ports unchanged', async () => {
    const picked = await pickHostPorts([parsePort('auto:80'), parsePort('127.0.0.1:0:81'), parsePort('127.0.0.1:9:82'), parsePort('auto:53/udp')]);
    expect(picked[2]).toEqual({ proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 9, guestPort: 82 });
    const [a, b] = [picked[0]!.hostPort, picked[1]!.hostPort];
    expect(a).toBeGreaterThan(0);
    expect(b).toBeGreaterThan(0);
    expect(a).not.toBe(b);
    expect(picked[3]!.hostPort).toBeGreaterThan(0);
    // Released: a server can listen there now.
    for (const port of [a, b]) {
      const s = net.createServer();
      await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(port, '127.0.0.1', () => resolve()); });
      await new Promise((r) => s.close(r));
    }
  });

  test('parseProbePort: a host port, or auto:GUESTPORT for an auto mapping', () => {
    expect(parseProbePort('8080', 'w')).toBe(8080);
    expect(parseProbePort('auto:8080', 'w')).toEqual({ guestPort: 8080 });
    for (const bad of ['0', 'auto:', 'x', '65536', 'auto:0']) expect(() => parseProbePort(bad, "input 'wait-tcp'")).toThrow(`input 'wait-tcp' is '${bad}': give a host port (8080) or auto:GUESTPORT`);
  });

  test('a probe naming an auto port nothing publishes is refused before anything boots', async () => {
    // No context to boot with: the refusal has to come first.
    const boot = { from: 'a/b:1', ports: ['auto:8080'] } as unknown as BootRequest;
    await expect(smoke(boot, { tcp: [{ guestPort: 9090 }], http: [], timeoutMs: 1 }, {} as VmContext, undefined as never))
      .rejects.toThrow('probe auto:9090: no published TCP port maps guest port 9090: add ports auto:9090');
    await expect(smoke(boot, { tcp: [], http: [{ url: 'http://127.0.0.1:auto:53/', status: 200 }], timeoutMs: 1 }, {} as VmContext, undefined as never))
      .rejects.toThrow('probe auto:53: no published TCP port maps guest port 53');
  });

  test('ip-address only where the host reaches it: a CNI address, never QEMU user-mode networking\'s 10.0.2.15', () => {
    const vm = (mode: VmState['network']['mode'], ip?: string): VmState => ({ network: { mode, ports: [], ...(ip ? { ip } : {}) } }) as unknown as VmState;
    expect(hostReachableIp(vm('cni', '192.168.127.50'))).toBe('192.168.127.50');
    expect(hostReachableIp(vm('user', '10.0.2.15'))).toBeUndefined();
    expect(hostReachableIp(vm('user-host', '10.0.2.15'))).toBeUndefined();
    expect(hostReachableIp(vm('none'))).toBeUndefined();
  });
});
