import * as net from 'node:net';
import * as os from 'node:os';
import { UserError } from '../util/errors.js';
import type { HopGuard, Pin } from '../util/pinned-request.js';
import { blockedRoutes, readHostView } from './isolated-user.js';

/**
 * Host-only addresses: what a process reaches only because it runs on this host. Loopback
 * (127.0.0.0/8, ::1), link-local (169.254.0.0/16 with the cloud metadata service, fe80::/10),
 * unspecified (0.0.0.0/8, ::), every address of the host's own interfaces, and the subnets of its
 * host-only interfaces (blockedRoutes: the same list the isolated build network makes unreachable).
 * URLs a Dockerfile names (ADD URLs, redirects of http context files) must not lead there: the host
 * process fetches them, outside the VM's network isolation.
 */
export const ENV_ALLOW_HOST_URLS = 'FIREBUILD_ALLOW_HOST_URLS';

const FIXED: [string, number, 'ipv4' | 'ipv6'][] = [
  ['127.0.0.0', 8, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'],
  ['0.0.0.0', 8, 'ipv4'],
  ['::1', 128, 'ipv6'],
  ['::', 128, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
];

let cached: Promise<net.BlockList> | undefined;

/** The host-only addresses as a BlockList (IPv4-mapped IPv6 addresses match the IPv4 rules); read once per process. */
export function hostOnlyBlockList(): Promise<net.BlockList> {
  cached ??= (async () => {
    const b = new net.BlockList();
    for (const [a, len, t] of FIXED) b.addSubnet(a, len, t);
    const view = await readHostView();
    for (const r of blockedRoutes(view)) {
      const [a, len] = r.split('/') as [string, string];
      b.addSubnet(a, Number(len), 'ipv4');
    }
    for (const addrs of Object.values(os.networkInterfaces())) {
      for (const a of addrs ?? []) if (a.family === 'IPv6') b.addAddress(a.address.replace(/%.*$/, ''), 'ipv6');
    }
    return b;
  })();
  return cached;
}

/** Is `address` (an IP literal) host-only? */
export async function isHostOnly(address: string): Promise<boolean> {
  const a = address.replace(/%.*$/, '');
  const fam = net.isIP(a);
  if (!fam) return false;
  return (await hostOnlyBlockList()).check(a, fam === 6 ? 'ipv6' : 'ipv4');
}

/** `--allow-host-urls` or FIREBUILD_ALLOW_HOST_URLS=1. */
export function hostUrlsAllowed(flag?: boolean, env: NodeJS.ProcessEnv = process.env): boolean {
  return flag === true || env[ENV_ALLOW_HOST_URLS] === '1';
}

/** A destination refused because it is host-only; callers put the URL's origin (`ADD <url>: `) in front. */
export class HostUrlRefused extends UserError {}

const HOW = 'a host-only address a build may not fetch from: serve it from elsewhere, or allow it with --allow-host-urls (trusted Dockerfiles only)';

/**
 * Refuses hops to host-only addresses. A name is resolved (all its addresses) and refused when any is
 * host-only; the request then connects to the address checked (pinned: no second resolution).
 * `trustedOrigin` (the operator's http context) is not checked: the operator named it.
 */
export class HostOnlyGuard implements HopGuard {
  constructor(private readonly trustedOrigin?: string) {}

  async check(u: URL): Promise<Pin | undefined> {
    if (this.trustedOrigin !== undefined && u.origin === this.trustedOrigin) return undefined;
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    if (net.isIP(host)) {
      if (await isHostOnly(host)) throw new HostUrlRefused(`${host} is ${HOW}`);
      return undefined;
    }
    let addrs: { address: string; family: number }[];
    try {
      // node:dns loads with the first name to check, not with every plan (bench/cli-start.mjs).
      const { lookup } = await import('node:dns/promises');
      addrs = await lookup(host, { all: true, verbatim: true });
    } catch (err) {
      throw new UserError(`cannot reach ${u.host} for ${u.toString()} (${(err as { code?: string }).code ?? (err as Error).message}): check the URL and that the server is up`, { cause: err });
    }
    for (const a of addrs) if (await isHostOnly(a.address)) throw new HostUrlRefused(`${host} resolves to ${a.address}, ${HOW}`);
    const first = addrs[0];
    if (!first) throw new UserError(`cannot reach ${u.host} for ${u.toString()} (no address): check the URL`);
    return { address: first.address, family: first.family === 6 ? 6 : 4 };
  }
}

/** The guard for URLs a Dockerfile names: none when host URLs are allowed. */
export function dockerfileUrlGuard(allow?: boolean, trustedOrigin?: string): HopGuard | undefined {
  return hostUrlsAllowed(allow) ? undefined : new HostOnlyGuard(trustedOrigin);
}
