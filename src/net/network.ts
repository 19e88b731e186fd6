import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { exists } from '../util/fs.js';

/**
 * How a VM reaches a network, as the runtime takes it: the mode, the ports it publishes, and where the
 * host-wide pieces (CNI plugins, the iptables lock) live. Parsed once at the edge (flags, inputs).
 *
 * `user`: QEMU's user-mode networking inside a namespace of its own (src/net/isolated-user.ts): outbound
 * only, never the host's loopback, addresses or host-only subnets, nor 169.254.0.0/16. `user-host`: QEMU's
 * user-mode networking in the host's namespace (10.0.2.2 is the host's loopback): run VMs only, an explicit
 * opt-in. `none`: no NIC. `cni`: a CNI network.
 */
export type NetworkMode = 'user' | 'user-host' | 'none' | 'cni';
export const NETWORK_MODES = ['user', 'user-host', 'none'] as const;

/** Host ports one user of the host may publish (profile/instance.ts parses it). */
export interface PortRange { low: number; high: number }

export interface PortSpec { proto: 'tcp' | 'udp'; hostAddr: string; hostPort: number; guestPort: number }

/** Where host-wide locks live (iptables changes). */
export const DEFAULT_LOCK_DIR = '/run/firebuild';

/** User-mode networking: QEMU's slirp gives the guest this address. */
export const USER_NET = { ip: '10.0.2.15/24', gateway: '10.0.2.2', dns: '10.0.2.3' };

/** The CNI interface inside the VM's namespace (redirected to the tap the VMM opens). */
export const CNI_IFNAME = 'eth0';

/**
 * `[hostip:]hostport:guestport[/tcp|udp]`. Without a host IP: 127.0.0.1 for user networking, every local
 * address (0.0.0.0) for CNI networking. A host port of `0` or `auto` (`auto:8080`, `127.0.0.1:0:8080`) is
 * hostPort 0: the launch picks a free port (pickHostPorts), so runners sharing a host never collide.
 */
export function parsePort(s: string, defaultHost = '127.0.0.1'): PortSpec {
  const m = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5}|auto):(\d{1,5})(?:\/(tcp|udp))?$/.exec(s);
  const ok = (n: string | undefined): boolean => Number(n) >= 1 && Number(n) <= 65535;
  const auto = m?.[2] === 'auto' || m?.[2] === '0';
  if (!m || !(auto || ok(m[2])) || !ok(m[3])) throw new UserError(`malformed --port '${s}': use [hostip:]hostport:guestport[/tcp|udp], e.g. 127.0.0.1:8080:80 (host port 0 or auto: a free port)`);
  return { proto: (m[4] ?? 'tcp') as 'tcp' | 'udp', hostAddr: m[1] ?? defaultHost, hostPort: auto ? 0 : Number(m[2]), guestPort: Number(m[3]) };
}

/** `127.0.0.1:40123:8080/tcp`: a published port as `--port` takes it. */
export function formatPort(p: PortSpec): string {
  return `${p.hostAddr}:${p.hostPort}:${p.guestPort}/${p.proto}`;
}

/**
 * Auto host ports (hostPort 0) made concrete: a free port for each, all held at once so two auto ports
 * never get the same one, then released for the VMM (or slirp4netns, or the DNAT rule) to take a moment
 * later. Without a range the kernel picks; with one (a runner instance's port range, so instances sharing a
 * host never take each other's ports) the ports of the range are tried from a random one on, and a fixed
 * host port outside it is refused. Fixed ports pass through unchanged.
 */
export async function pickHostPorts(ports: PortSpec[], range?: PortRange, from = 'the port range'): Promise<PortSpec[]> {
  const held: (() => Promise<void>)[] = [];
  try {
    const out: PortSpec[] = [];
    for (const p of ports) {
      if (p.hostPort !== 0) {
        if (range && (p.hostPort < range.low || p.hostPort > range.high)) {
          throw new UserError(`host port ${p.hostPort} is outside ${from} ${range.low}-${range.high}: publish auto:${p.guestPort} (a free port of the range) or a host port in it`);
        }
        out.push(p);
        continue;
      }
      const hold = p.proto === 'udp' ? holdUdp : holdTcp;
      const { port, close } = range ? await holdInRange(p, range, from, hold) : await hold(p.hostAddr, 0);
      held.push(close);
      out.push({ ...p, hostPort: port });
    }
    return out;
  } finally {
    for (const close of held) await close();
  }
}

type Hold = (host: string, port: number) => Promise<{ port: number; close: () => Promise<void> }>;

async function holdInRange(p: PortSpec, range: PortRange, from: string, hold: Hold): Promise<{ port: number; close: () => Promise<void> }> {
  const size = range.high - range.low + 1;
  const start = Math.floor(Math.random() * size);
  for (let i = 0; i < size; i++) {
    const port = range.low + ((start + i) % size);
    const got = await hold(p.hostAddr, port).catch(() => undefined);
    if (got) return got;
  }
  throw new UserError(`no free ${p.proto.toUpperCase()} port on ${p.hostAddr} in ${from} ${range.low}-${range.high}: stop VMs that hold ports of it (firebuild ls) or widen the range`);
}

const holdTcp: Hold = (host, want) => new Promise((resolve, reject) => {
  const srv = net.createServer();
  srv.once('error', (e) => reject(new UserError(`no free TCP port on ${host}: ${e.message}`)));
  srv.listen(want, host, () => resolve({ port: (srv.address() as net.AddressInfo).port, close: () => new Promise((r) => srv.close(() => r())) }));
});

const holdUdp: Hold = (host, want) => new Promise((resolve, reject) => {
  const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  sock.once('error', (e) => reject(new UserError(`no free UDP port on ${host}: ${e.message}`)));
  sock.bind(want, host, () => resolve({ port: sock.address().port, close: () => new Promise((r) => sock.close(() => r())) }));
});

/** `--cni-bin-dir`, or the first of the usual places that exists. */
export async function cniBinDir(flag?: string): Promise<string> {
  if (flag) return path.resolve(flag);
  for (const d of ['/opt/cni/bin', '/usr/lib/cni']) {
    if (await exists(d)) return d;
  }
  throw new UserError('no CNI plugins found in /opt/cni/bin or /usr/lib/cni: install containernetworking-plugins or set --cni-bin-dir');
}
