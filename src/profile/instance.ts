import type { PortRange } from '../net/network.js';
import { UserError } from '../util/errors.js';

export type { PortRange };

/**
 * The settings that keep several firebuild users of one host (runner instances: runner-setup --instances N)
 * apart, beyond the store and run cache (FIREBUILD_HOME): the host ports a VM may publish, the cgroup
 * subtree its VMs live in, and the real names of the CNI networks a workflow asks for by a shared name.
 * Pure parsers: each bad value is one line naming where it came from.
 */

/** `LOW-HIGH`, 1024 <= LOW <= HIGH <= 65535 (ports below 1024 need root to bind). */
export function parsePortRange(s: string, from: string): PortRange {
  const m = /^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$/.exec(s);
  const low = Number(m?.[1]);
  const high = Number(m?.[2]);
  if (!m || low < 1024 || high > 65535 || low > high) {
    throw new UserError(`malformed port range '${s}' (${from}): give LOW-HIGH with 1024 <= LOW <= HIGH <= 65535, e.g. 20000-20999`);
  }
  return { low, high };
}

export function formatPortRange(r: PortRange): string {
  return `${r.low}-${r.high}`;
}

/** Whether two ranges share a port. */
export function rangesOverlap(a: PortRange, b: PortRange): boolean {
  return a.low <= b.high && b.low <= a.high;
}

/** The kernel's ephemeral ports (`net.ipv4.ip_local_port_range`, "32768\t60999"), or undefined when unreadable. */
export function parseEphemeralRange(text: string): PortRange | undefined {
  const m = /^\s*(\d+)\s+(\d+)\s*$/.exec(text);
  return m ? { low: Number(m[1]), high: Number(m[2]) } : undefined;
}

/**
 * A port range that overlaps the kernel's ephemeral ports would lose ports to outgoing connections of any
 * process of the host (their source ports): refused, with the way out.
 */
export function checkNotEphemeral(r: PortRange, ephemeral: PortRange | undefined, from: string): void {
  if (ephemeral && rangesOverlap(r, ephemeral)) {
    throw new UserError(`port range ${formatPortRange(r)} (${from}) overlaps the kernel's ephemeral ports ${formatPortRange(ephemeral)} (net.ipv4.ip_local_port_range), which outgoing connections take: pick a range below ${ephemeral.low} or above ${ephemeral.high}`);
  }
}

/** The default cgroup subtree (under the cgroup2 mount) that holds one cgroup per VM. */
export const DEFAULT_CGROUP_PARENT = 'firebuild';
const CGROUP_NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

/** A relative cgroup path of up to 4 names (`firebuild-2`, `firebuild/runner-2`): no `..`, no absolute path. */
export function parseCgroupParent(s: string, from: string): string {
  const parts = s.split('/');
  if (!s || parts.length > 4 || !parts.every((p) => CGROUP_NAME_RE.test(p) && p !== '.' && p !== '..')) {
    throw new UserError(`malformed cgroup parent '${s}' (${from}): give a relative cgroup path of names made of letters, digits, '_', '.' and '-', e.g. firebuild-2`);
  }
  return s;
}

const CNI_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * `NAME=NETWORK` pairs: a workflow's `cni-network: NAME` (or `--cni-network-name NAME`) attaches to this
 * user's NETWORK (`machines=machines-2`), so the same workflow lands on each instance's own network.
 */
export function parseCniAliases(items: readonly string[], from: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const m = /^([^=]+)=(.+)$/.exec(item.trim());
    if (!m || !CNI_NAME_RE.test(m[1]!) || !CNI_NAME_RE.test(m[2]!)) {
      throw new UserError(`malformed CNI network alias '${item}' (${from}): give NAME=NETWORK, e.g. machines=machines-2`);
    }
    if (out[m[1]!] !== undefined && out[m[1]!] !== m[2]) throw new UserError(`CNI network alias ${m[1]} is given twice with different networks (${from}): keep one`);
    out[m[1]!] = m[2]!;
  }
  return out;
}

/**
 * The CNI network a name asked for means here: its alias when it has one, itself when it is one of the
 * aliases' networks. With aliases set, any other name is refused: it would be another instance's network
 * (or none of this host's), and its subnet and bridge are not this instance's.
 */
export function resolveCniNetwork(name: string, aliases: Record<string, string>): string {
  const keys = Object.keys(aliases);
  if (!keys.length) return name;
  const mapped = Object.hasOwn(aliases, name) ? aliases[name] : undefined;
  if (mapped) return mapped;
  if (Object.values(aliases).includes(name)) return name;
  throw new UserError(`CNI network '${name}' is not one of this runner's networks (cni-network-aliases: ${keys.map((k) => `${k}=${aliases[k]}`).join(', ')}): ask for ${keys.join(' or ')}`);
}
