import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { exec } from '../util/exec.js';
import { withLock } from '../util/lock.js';

/**
 * Host-side plumbing for CNI networking: a network namespace per VM, a tap device in it redirected to
 * the CNI interface with tc (what tc-redirect-tap does), and port publishing with iptables DNAT in
 * firebuild's own chains. Every change is undone by the matching remove function, which tolerates
 * things already gone (purge after a crash).
 */
export const NETNS_DIR = '/run/netns';
export const TAP_NAME = 'tap0';
export const DNAT_CHAIN = 'FIREBUILD-DNAT';

export function netnsName(id: string): string {
  return `fb-${id}`;
}

export async function createNetns(name: string): Promise<string> {
  await exec('ip', ['netns', 'add', name]);
  await exec('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return path.join(NETNS_DIR, name);
}

export async function removeNetns(name: string): Promise<void> {
  try {
    await fsp.access(path.join(NETNS_DIR, name));
  } catch {
    return;
  }
  await exec('ip', ['netns', 'del', name]);
}

/**
 * Make `tap` in the namespace and redirect every frame between it and `ifname` both ways, then take the
 * address off `ifname`: the guest owns the IP and uses `ifname`'s MAC, so the bridge's view is unchanged.
 * Returns that MAC.
 */
async function linkInfo(ns: string, ifname: string): Promise<{ address: string; mtu: number }> {
  const link = JSON.parse((await exec('ip', ['-n', ns, '-j', 'link', 'show', ifname])).stdout) as { address: string; mtu: number }[];
  return link[0]!;
}

export async function linkMac(ns: string, ifname: string): Promise<string> {
  return (await linkInfo(ns, ifname)).address;
}

export async function redirectTap(ns: string, ifname: string, tap = TAP_NAME): Promise<{ mac: string; mtu: number }> {
  const { address: mac, mtu } = await linkInfo(ns, ifname);
  await exec('ip', ['-n', ns, 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  await exec('ip', ['-n', ns, 'link', 'set', tap, 'mtu', String(mtu), 'up']);
  for (const [from, to] of [[ifname, tap], [tap, ifname]] as const) {
    await exec('tc', ['-n', ns, 'qdisc', 'add', 'dev', from, 'ingress']);
    await exec('tc', ['-n', ns, 'filter', 'add', 'dev', from, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u8', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', to]);
  }
  await exec('ip', ['-n', ns, 'addr', 'flush', 'dev', ifname]);
  return { mac, mtu };
}

export interface Dnat { proto: 'tcp' | 'udp'; hostAddr: string; hostPort: number; guestIp: string; guestPort: number }

function dnatRule(id: string, d: Dnat): string[] {
  return [
    '-p', d.proto,
    ...(d.hostAddr && d.hostAddr !== '0.0.0.0' ? ['-d', d.hostAddr] : ['-m', 'addrtype', '--dst-type', 'LOCAL']),
    '--dport', String(d.hostPort),
    '-m', 'comment', '--comment', `firebuild:${id}`,
    '-j', 'DNAT', '--to-destination', `${d.guestIp}:${d.guestPort}`,
  ];
}

async function ipt(args: string[]): Promise<{ code: number; stdout: string }> {
  const r = await exec('iptables', ['-w', '5', ...args], { allowFailure: true });
  return { code: r.code, stdout: r.stdout };
}

/** Port publishing: DNAT rules in firebuild's own nat chain, jumped to from PREROUTING and OUTPUT. */
export async function addPortForwards(lockDir: string, id: string, forwards: Dnat[]): Promise<void> {
  if (!forwards.length) return;
  await withLock(path.join(lockDir, 'iptables'), async () => {
    if ((await ipt(['-t', 'nat', '-S', DNAT_CHAIN])).code !== 0) await exec('iptables', ['-w', '5', '-t', 'nat', '-N', DNAT_CHAIN]);
    for (const hook of ['PREROUTING', 'OUTPUT']) {
      if ((await ipt(['-t', 'nat', '-C', hook, '-j', DNAT_CHAIN])).code !== 0) await exec('iptables', ['-w', '5', '-t', 'nat', '-I', hook, '-j', DNAT_CHAIN]);
    }
    for (const f of forwards) await exec('iptables', ['-w', '5', '-t', 'nat', '-A', DNAT_CHAIN, ...dnatRule(id, f)]);
  });
}

/** Remove every rule of this VM from firebuild's chain (found by its comment). */
export async function removePortForwards(lockDir: string, id: string): Promise<void> {
  await withLock(path.join(lockDir, 'iptables'), async () => {
    const listing = await ipt(['-t', 'nat', '-S', DNAT_CHAIN]);
    if (listing.code !== 0) return;
    for (const line of listing.stdout.split('\n')) {
      if (!line.startsWith(`-A ${DNAT_CHAIN} `) || !line.includes(`firebuild:${id}`)) continue;
      const spec = line.slice(`-A ${DNAT_CHAIN} `.length).match(/"[^"]*"|\S+/g)!.map((t) => t.replace(/^"|"$/g, ''));
      await ipt(['-t', 'nat', '-D', DNAT_CHAIN, ...spec]);
    }
  });
}
