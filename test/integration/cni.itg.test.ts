import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lines, runCli, tempDir, expectJsonResult } from '../helpers/cli.js';
import { alive, importTestKernel, killAll } from '../helpers/vm.js';

/**
 * CNI networking on real parts: Debian's CNI plugins (bridge, host-local, firewall), a network namespace
 * per VM with its tap redirected to the CNI interface by tc, iptables DNAT for published ports, QEMU (TCG)
 * booting the image. Everything happens inside a network namespace this test creates: firebuild runs in
 * it (so the bridge, the iptables rules and the probing client live there), and nothing reaches the host.
 */
const SUBNET = '192.168.127';
let work: string;
let ns: string;
let confDir: string;
let env: NodeJS.ProcessEnv;
// nsenter joins only the network namespace: `ip netns exec` would also give firebuild a private mount
// namespace, where the per-VM netns it creates would stay invisible to the next command.
const wrap = (): string[] => ['nsenter', `--net=/run/netns/${ns}`, '--'];
const inNs = (...argv: string[]): string => execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8' });
const runCache = (): string => path.join(work, 'home', 'run');
const netnsList = (): string[] => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0] as string).filter(Boolean);
const dnatRules = (): string[] => {
  try {
    return lines(inNs('iptables', '-w', '5', '-t', 'nat', '-S', 'FIREBUILD-DNAT')).filter((l) => l.startsWith('-A'));
  } catch {
    return [];
  }
};
const cniFlags = (): string[] => ['--cni-network-name', 'fbtest', '--cni-conf-dir', confDir, '--cni-bin-dir', '/usr/lib/cni'];

beforeAll(async () => {
  work = await tempDir();
  ns = `fbt-${randomBytes(4).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', ns]);
  inNs('ip', 'link', 'set', 'lo', 'up');
  confDir = path.join(work, 'cni');
  fs.mkdirSync(confDir);
  fs.writeFileSync(path.join(confDir, '10-fbtest.conflist'), JSON.stringify({
    cniVersion: '1.0.0',
    name: 'fbtest',
    plugins: [
      { type: 'bridge', bridge: 'fbbr0', isGateway: true, ipMasq: false, ipam: { type: 'host-local', subnet: `${SUBNET}.0/24`, dataDir: path.join(work, 'ipam') } },
      { type: 'firewall' },
    ],
  }));
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  expect((await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.resolve('examples/hello/Dockerfile'), '--tag', 'examples/hello:1', '--free-space', '32M'], { env })).code).toBe(0);
  expect(await importTestKernel(env)).toBe(0);
});
afterAll(async () => {
  await killAll(runCache(), env, { shutdownTimeout: 2, wrap: wrap() });
  execFileSync('ip', ['netns', 'del', ns]);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('CNI networking (inside a test network namespace)', () => {
  test('a VM on a CNI bridge: IP from IPAM, port published by DNAT with host port != guest port, reachable; kill removes netns, rules, lease', async () => {
    const url = `http://${SUBNET}.1:18081/cgi-bin/index.cgi`;
    const r = await runCli(['run', '--from', 'examples/hello:1', '--name', 'cni1', ...cniFlags(), '--port', '18081:8080', '--env', 'GREETING=bridged', '--daemonize', '--wait-http', url], { env, wrap: wrap() });
    expectJsonResult(r);
    const vm = JSON.parse(r.stdout) as { 'vmm-id': string; pid: number; 'ip-address': string };
    expect(vm['ip-address']).toMatch(new RegExp(`^${SUBNET.replace(/\./g, '\\.')}\\.\\d+$`));
    // Through the published port (DNAT 18081 -> 8080) and straight to the guest.
    expect(inNs('curl', '-s', '--max-time', '10', url)).toBe('bridged from cni1\n');
    expect(inNs('curl', '-s', '--max-time', '10', `http://${vm['ip-address']}:8080/cgi-bin/index.cgi`)).toBe('bridged from cni1\n');
    expect(dnatRules()).toEqual([expect.stringContaining(`--to-destination ${vm['ip-address']}:8080`)]);
    expect(netnsList()).toContain(`fb-${vm['vmm-id']}`);
    const inspect = JSON.parse((await runCli(['inspect', '--vmm-id', vm['vmm-id']], { env })).stdout);
    expect(inspect.NetworkInterfaces[0].StaticConfiguration.IPConfiguration.IP).toBe(vm['ip-address']);
    const lease = path.join(work, 'ipam', 'fbtest', vm['ip-address']);
    expect(fs.existsSync(lease)).toBe(true);

    const k = await runCli(['kill', '--vmm-id', vm['vmm-id']], { env, wrap: wrap() });
    expect({ code: k.code, warnings: lines(k.stderr).filter((l) => /WARN|error/.test(l)) }).toEqual({ code: 0, warnings: [] });
    expect(alive(vm.pid)).toBe(false);
    expect(netnsList()).not.toContain(`fb-${vm['vmm-id']}`);
    expect(dnatRules()).toEqual([]);
    expect(fs.existsSync(lease)).toBe(false);
    // Only the bridge is left in the test namespace: no veth of the VM.
    expect(lines(inNs('ip', '-o', 'link', 'show')).map((l) => l.split(':')[1]!.trim().split('@')[0])).toEqual(['lo', 'fbbr0']);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test('--ip-address gets exactly that address; a VM killed with SIGKILL is cleaned by purge', async () => {
    const r = await runCli(['run', '--from', 'examples/hello:1', ...cniFlags(), '--ip-address', `${SUBNET}.50`, '--daemonize'], { env, wrap: wrap() });
    expectJsonResult(r);
    const vm = JSON.parse(r.stdout) as { 'vmm-id': string; pid: number; 'ip-address': string };
    expect(vm['ip-address']).toBe(`${SUBNET}.50`);
    process.kill(vm.pid, 'SIGKILL');
    for (let i = 0; i < 50 && alive(vm.pid); i++) await new Promise((res) => setTimeout(res, 100));
    const p = await runCli(['purge'], { env, wrap: wrap() });
    expect(p.stdout.trim()).toBe(vm['vmm-id']);
    expect(netnsList()).not.toContain(`fb-${vm['vmm-id']}`);
    expect(fs.existsSync(path.join(work, 'ipam', 'fbtest', `${SUBNET}.50`))).toBe(false);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test('with tc-redirect-tap in the plugin directory it is chained and makes the tap (test double: not packaged by Debian)', async () => {
    const bin = path.join(work, 'bin-with-tap');
    fs.mkdirSync(bin);
    for (const p of ['bridge', 'host-local', 'firewall']) fs.symlinkSync(path.join('/usr/lib/cni', p), path.join(bin, p));
    fs.copyFileSync(path.resolve('test/fixtures/cni/tc-redirect-tap'), path.join(bin, 'tc-redirect-tap'));
    fs.chmodSync(path.join(bin, 'tc-redirect-tap'), 0o755);
    const flags = cniFlags().map((f) => (f === '/usr/lib/cni' ? bin : f));
    const r = await runCli(['run', '--from', 'examples/hello:1', '--name', 'tapped', ...flags, '--env', 'GREETING=tapped', '--daemonize'], { env, wrap: wrap() });
    expectJsonResult(r);
    const vm = JSON.parse(r.stdout) as { 'vmm-id': string; 'ip-address': string };
    expect(inNs('curl', '-s', '--max-time', '30', '--retry', '10', '--retry-connrefused', `http://${vm['ip-address']}:8080/cgi-bin/index.cgi`)).toBe('tapped from tapped\n');
    expect((await runCli(['kill', '--vmm-id', vm['vmm-id']], { env, wrap: wrap() })).code).toBe(0);
    expect(lines(fs.readFileSync(path.join(bin, 'tc-redirect-tap.log'), 'utf8'))).toEqual([`ADD ${vm['vmm-id']}`, `DEL ${vm['vmm-id']}`]);
    expect(netnsList()).not.toContain(`fb-${vm['vmm-id']}`);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test.each([
    ['CNI network name not found', ['--cni-network-name', 'nope', '--cni-conf-dir', () => confDir], /^error: CNI network nope not found in /],
    ['--ip-address outside the subnet', ['--ip-address', '10.9.9.9'], /^error: CNI ADD with plugin bridge failed: /],
    ['--network with --cni-network-name', ['--network', 'user'], /^error: --network and --cni-network-name exclude each other/],
  ])('bad input: %s is one line, exit 2, nothing leaked', async (_n, extra, want) => {
    const before = netnsList();
    const flags = extra.map((x) => (typeof x === 'function' ? x() : x));
    const args = flags[0] === '--cni-network-name' ? flags : [...cniFlags(), ...flags];
    const r = await runCli(['run', '--from', 'examples/hello:1', ...args, '--daemonize'], { env, wrap: wrap() });
    expect(r.code).toBe(2);
    expect(lines(r.stderr).filter((l) => l.startsWith('error:'))).toEqual([expect.stringMatching(want)]);
    expect(netnsList()).toEqual(before);
    expect(dnatRules()).toEqual([]);
    expect(fs.existsSync(runCache()) ? fs.readdirSync(runCache()) : []).toEqual([]);
  });
});
