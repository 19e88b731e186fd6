import { execFile } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { pidAlive } from '../util/fs.js';

/**
 * Isolated user-mode networking (`--network user`): QEMU's slirp runs inside a user, network and mount
 * namespace of its own (`unshare`), whose only way out is slirp4netns with `--disable-host-loopback`.
 * QEMU's 10.0.2.2 then maps to the namespace's empty loopback; the host's own addresses, the subnets of
 * its host-only interfaces (bridges of local containers and VMs) and 169.254.0.0/16 (cloud metadata)
 * are `unreachable` routes inside the namespace; DNS goes to the host's upstream resolvers directly
 * (slirp4netns' built-in DNS is off: it forwards any port to the host's resolver, which may be a
 * loopback address). Works as root and as a user (unprivileged user namespaces).
 *
 * Process tree (one process group; in the VM's cgroup when there is one):
 *   sh (outer, host netns) -+- unshare -> sh (inner: waits for slirp4netns, routes, resolv.conf) -> qemu
 *                           +- slirp4netns (--exit-fd on the pipe QEMU holds: exits when QEMU ends)
 */
export const NS_CIDR = '10.0.20.0/24';
/** The namespace's own address on tap0 (slirp4netns: network + 100); QEMU's hostfwd listens there. */
export const NS_ADDR = '10.0.20.100';
export const SLIRP_SOCK = 'slirp4netns.sock';
export const NET_LOG = 'net.log';
export const RESOLV_CONF = 'resolv.conf';
const READY_FIFO = 'slirp4netns.ready';

/** Runs in the host's netns: starts the namespace, reads its pid from the pipe, starts slirp4netns on it. */
const OUTER = [
  'd=$1; inner=$2; shift 2',
  `exec 2>>"$d/${NET_LOG}" </dev/null >/dev/null`,
  'PATH=$PATH:/usr/sbin:/sbin; export PATH',
  `mkfifo -m 600 "$d/${READY_FIFO}" || exit 1`,
  'unshare --user --map-root-user --net --mount -- /bin/sh -c "$inner" fb-net-inner "$d" "$@" | {',
  '  read -r ns || { echo "the network namespace could not be made" >&2; exit 1; }',
  `  exec slirp4netns --configure --mtu=65520 --disable-host-loopback --disable-dns --cidr=${NS_CIDR} --api-socket="$d/${SLIRP_SOCK}" --exit-fd=0 --ready-fd=3 "$ns" tap0 3>"$d/${READY_FIFO}"`,
  '}',
].join('\n');

/**
 * Runs in the namespace: reports its pid, keeps the pipe's write end on fd 9 (QEMU inherits it: its end
 * is slirp4netns' exit), waits for slirp4netns, adds the routes, binds resolv.conf, execs the command.
 */
const INNER = [
  'd=$1; shift',
  'echo $$ || exit 1',
  'exec 9>&1 >/dev/null',
  `read -r ok <"$d/${READY_FIFO}"; [ "$ok" = 1 ] || { echo "slirp4netns did not start" >&2; exit 1; }`,
  'n=$1; shift',
  'while [ "$n" -gt 0 ]; do ip route add unreachable "$1" || exit 1; shift; n=$((n - 1)); done',
  `mount --bind "$d/${RESOLV_CONF}" /etc/resolv.conf || exit 1`,
  'exec "$@"',
].join('\n');

/** The argv that runs `command` in an isolated namespace; `dir` is the VM's private (0700) run cache directory. */
export function isolatedArgv(o: { dir: string; routes: string[]; command: string[] }): [string, string[]] {
  if (!o.command.length) throw new Error('isolatedArgv: empty command');
  return ['/bin/sh', ['-c', OUTER, 'fb-net', o.dir, INNER, String(o.routes.length), ...o.routes, ...o.command]];
}

export interface HostView {
  /** os.networkInterfaces() */
  interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]>;
  /** Interfaces that carry a default route (their subnets are the way out, not host-only). */
  defaultDevs: string[];
}

/** IPv4 a.b.c.d/len -> the network a.b.c.d/len (host bits cleared). */
function network(addr: string, len: number): string {
  const n = addr.split('.').reduce((a, o) => (a << 8) + Number(o), 0) >>> 0;
  const mask = len === 0 ? 0 : (~0 << (32 - len)) >>> 0;
  const v = (n & mask) >>> 0;
  return `${[24, 16, 8, 0].map((s) => (v >>> s) & 255).join('.')}/${len}`;
}

/**
 * What the namespace must not reach: 169.254.0.0/16, every IPv4 address of the host (/32), and the
 * subnets of its interfaces that carry no default route (docker0, cni0, virbr0, test veths: host-only).
 * Loopback is not listed: inside the namespace 127/8 is the namespace's own.
 */
export function blockedRoutes(v: HostView): string[] {
  const out = new Set<string>(['169.254.0.0/16']);
  for (const [dev, addrs] of Object.entries(v.interfaces)) {
    for (const a of addrs ?? []) {
      if (a.family !== 'IPv4' || a.internal || a.address.startsWith('127.')) continue;
      out.add(`${a.address}/32`);
      const len = Number(a.cidr?.split('/')[1] ?? 32);
      if (!v.defaultDevs.includes(dev) && len < 32) out.add(network(a.address, len));
    }
  }
  return [...out];
}

/** Interfaces with a default route, from /proc/net/route's text. */
export function defaultRouteDevs(procNetRoute: string): string[] {
  return procNetRoute.split('\n').slice(1).map((l) => l.trim().split(/\s+/)).filter((f) => f[1] === '00000000' && f[7] === '00000000').map((f) => f[0] as string);
}

/** IPv4 nameservers of a resolv.conf text that the namespace can reach (not loopback). */
export function upstreamNameservers(text: string): { servers: string[]; loopback: boolean } {
  const all = [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1] as string);
  const v4 = all.filter((a) => net.isIPv4(a));
  return { servers: v4.filter((a) => !a.startsWith('127.')), loopback: v4.some((a) => a.startsWith('127.')) };
}

/** The namespace's resolv.conf: the host's upstream resolvers (systemd-resolved's list when /etc/resolv.conf names its stub). */
export async function namespaceResolvConf(): Promise<{ text: string; servers: string[] }> {
  let r = upstreamNameservers(await fsp.readFile('/etc/resolv.conf', 'utf8').catch(() => ''));
  if (!r.servers.length && r.loopback) r = upstreamNameservers(await fsp.readFile('/run/systemd/resolve/resolv.conf', 'utf8').catch(() => ''));
  return { text: r.servers.slice(0, 3).map((s) => `nameserver ${s}\n`).join(''), servers: r.servers };
}

/** `ip -j -4 addr` in os.networkInterfaces()'s shape (which leaves out interfaces that are down, whose addresses still answer). */
export function interfacesFromIpJson(text: string): NodeJS.Dict<os.NetworkInterfaceInfo[]> {
  const out: NodeJS.Dict<os.NetworkInterfaceInfo[]> = {};
  for (const l of JSON.parse(text) as { ifname: string; addr_info?: { family: string; local: string; prefixlen: number }[] }[]) {
    out[l.ifname] = (l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => ({ address: a.local, netmask: '', family: 'IPv4', mac: '', internal: l.ifname === 'lo', cidr: `${a.local}/${a.prefixlen}` }));
  }
  return out;
}

export async function readHostView(): Promise<HostView> {
  const ip = await new Promise<string>((resolve) => execFile('ip', ['-j', '-4', 'addr'], { timeout: 10000 }, (err, stdout) => resolve(err ? '' : stdout)));
  let interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]>;
  try {
    interfaces = { ...os.networkInterfaces(), ...interfacesFromIpJson(ip) };
  } catch {
    interfaces = os.networkInterfaces();
  }
  return { interfaces, defaultDevs: defaultRouteDevs(await fsp.readFile('/proc/net/route', 'utf8').catch(() => '')) };
}

function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 10000 }, (err, stdout, stderr) => resolve({ ok: !err, out: `${stderr}${stdout}`.trim().split('\n')[0] ?? '' }));
  });
}

const HOW = "or give --network none, or --network user-host to let the VM reach the host's services (never for untrusted code)";
let checked: Promise<void> | undefined;

/** Can this host make the namespace? A one-line UserError saying why not and how to fix it (cached per process). */
export function checkIsolatedNet(): Promise<void> {
  checked ??= (async () => {
    if (!(await run('slirp4netns', ['--version'])).ok) throw new UserError(`isolated user-mode networking needs slirp4netns, which is not installed: apt-get install slirp4netns, ${HOW}`);
    const u = await run('unshare', ['--user', '--map-root-user', '--net', '--mount', '--', '/bin/sh', '-c', 'PATH=$PATH:/usr/sbin:/sbin; ip link set lo up && mount -t tmpfs none /mnt']);
    if (!u.ok) throw new UserError(`isolated user-mode networking needs unprivileged user namespaces, which this host refuses (${u.out || 'unshare failed'}): enable them (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces>0, kernel.apparmor_restrict_unprivileged_userns=0), ${HOW}`);
  })();
  checked.catch(() => {
    checked = undefined;
  });
  return checked;
}

/** Write the namespace's resolv.conf into the VM's directory. */
export async function prepareIsolatedDir(dir: string): Promise<string[]> {
  const r = await namespaceResolvConf();
  await fsp.writeFile(path.join(dir, RESOLV_CONF), r.text, { mode: 0o644 });
  return r.servers;
}

/** The last message of the namespace's log that says something (slirp4netns' chatter left out). */
export async function netLogReason(dir: string): Promise<string | undefined> {
  const text = await fsp.readFile(path.join(dir, NET_LOG), 'utf8').catch(() => '');
  return text.trim().split('\n').filter((l) => l && !/tapfd|^starting slirp|exitfd event|do_slirp is exiting|^WARNING: Support for sandboxing/.test(l)).pop();
}

/**
 * The processes of an isolated VM still on the host: members of its process group (led by the wrapper's
 * pid, which Linux never hands out again while the group has members) whose command line names the VM's
 * own directory. Found even after the leader died (a SIGKILLed wrapper leaves QEMU and slirp4netns).
 */
export async function isolatedVmProcesses(pgid: number, dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const e of await fsp.readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(e)) continue;
    const stat = await fsp.readFile(`/proc/${e}/stat`, 'utf8').catch(() => '');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(f[2]) !== pgid) continue;
    const cmdline = await fsp.readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').some((a) => a === dir || a.startsWith(dir + '/') || a.includes(`=${dir}/`) || a.includes(`:${dir}/`))) out.push(Number(e));
  }
  return out;
}

export interface Forward { proto: 'tcp' | 'udp'; hostAddr: string; hostPort: number }

/** One request to slirp4netns' API socket. */
function apiCall(sock: string, body: unknown): Promise<{ return?: unknown; error?: { desc?: string } }> {
  return new Promise((resolve, reject) => {
    let text = '';
    const c = net.connect(sock, () => c.end(JSON.stringify(body)));
    c.setEncoding('utf8');
    c.on('data', (d: string) => (text += d));
    c.on('end', () => {
      try {
        resolve(JSON.parse(text) as { return?: unknown; error?: { desc?: string } });
      } catch {
        reject(new Error(`slirp4netns answered ${JSON.stringify(text)}`));
      }
    });
    c.on('error', reject);
    c.setTimeout(5000, () => c.destroy(new Error('slirp4netns API timed out')));
  });
}

/**
 * Publish host ports: slirp4netns listens on the host's hostAddr:hostPort and connects to
 * NS_ADDR:hostPort in the namespace, where QEMU's hostfwd listens. Waits for the API socket while the
 * VM's process lives.
 */
export async function publishPorts(dir: string, ports: Forward[], pid: number, timeoutMs = 30000): Promise<void> {
  const sock = path.join(dir, SLIRP_SOCK);
  const deadline = Date.now() + timeoutMs;
  for (const p of ports) {
    const body = { execute: 'add_hostfwd', arguments: { proto: p.proto, host_addr: p.hostAddr, host_port: p.hostPort, guest_addr: NS_ADDR, guest_port: p.hostPort } };
    for (;;) {
      try {
        const r = await apiCall(sock, body);
        if (r.error) throw new UserError(`port ${p.hostAddr}:${p.hostPort} could not be published: ${r.error.desc ?? JSON.stringify(r.error)}`);
        break;
      } catch (err) {
        if (err instanceof UserError) throw err;
        const why = await netLogReason(dir);
        if (!pidAlive(pid)) throw new UserError(`the VM's isolated network did not start${why ? `: ${why}` : ''}`);
        if (Date.now() > deadline) throw new UserError(`the VM's isolated network did not come up in ${timeoutMs / 1000} s${why ? `: ${why}` : ''}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}
