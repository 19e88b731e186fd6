import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { exec } from '../util/exec.js';

/**
 * A minimal CNI runtime (the CNI spec's ADD/DEL for a network configuration list): loads the conflist
 * named `--cni-network-name` from `--cni-conf-dir`, runs its plugins from `--cni-bin-dir` in order with
 * each result passed on as `prevResult`, and runs DEL in reverse order with the cached result.
 */
export interface CniNetwork {
  name: string;
  cniVersion: string;
  plugins: Record<string, unknown>[];
  file: string;
}

export interface CniRuntime {
  containerId: string;
  netns: string;
  ifname: string;
  /** A fixed IP for the VM (`--ip-address`), passed to IPAM as CNI_ARGS IP= and runtimeConfig ips. */
  ip?: string;
}

export interface CniResult {
  cniVersion?: string;
  interfaces?: { name: string; mac?: string; sandbox?: string }[];
  ips?: { address: string; gateway?: string; interface?: number }[];
  dns?: { nameservers?: string[] };
}

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export async function loadCniNetwork(confDir: string, name: string): Promise<CniNetwork> {
  if (!NAME_RE.test(name)) throw new UserError(`invalid --cni-network-name '${name}': use letters, digits, '.', '_' and '-'`);
  const files = (await fsp.readdir(confDir).catch(() => {
    throw new UserError(`CNI config directory ${confDir} not found: set --cni-conf-dir`);
  })).filter((f) => /\.(conflist|conf|json)$/.test(f)).sort();
  for (const f of files) {
    const file = path.join(confDir, f);
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, unknown>;
    } catch {
      continue; // not ours to judge: CNI runtimes skip unreadable files too
    }
    if (j.name !== name) continue;
    // A single-plugin .conf is a list of one.
    const plugins = Array.isArray(j.plugins) ? (j.plugins as Record<string, unknown>[]) : [j];
    if (!plugins.length || plugins.some((p) => typeof p.type !== 'string' || !NAME_RE.test(p.type as string))) {
      throw new UserError(`CNI network ${name} in ${file} has a plugin without a valid "type"`);
    }
    return { name, cniVersion: String(j.cniVersion ?? '1.0.0'), plugins, file };
  }
  throw new UserError(`CNI network ${name} not found in ${confDir}: add a conflist with "name": "${name}" or fix --cni-network-name`);
}

/** One CNI plugin call (the CNI protocol: config JSON on stdin, environment variables, the result JSON on stdout). */
async function runPlugin(binDir: string, type: string, command: 'ADD' | 'DEL', rt: CniRuntime, conf: Record<string, unknown>): Promise<string> {
  const bin = path.join(binDir, type);
  const env = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: rt.containerId,
    CNI_NETNS: rt.netns,
    CNI_IFNAME: rt.ifname,
    CNI_PATH: binDir,
    ...(rt.ip ? { CNI_ARGS: `IgnoreUnknown=1;IP=${rt.ip}` } : {}),
  };
  const r = await exec(bin, [], { env, input: JSON.stringify(conf), allowFailure: true, notFound: `no CNI plugin ${type} in ${binDir}: set --cni-bin-dir` });
  if (r.code === 0) return r.stdout;
  // A plugin reports its error as JSON on stdout (the CNI spec), else as text.
  let msg = (r.stderr || r.stdout).trim();
  try {
    const j = JSON.parse(r.stdout) as { msg?: string; details?: string };
    msg = [j.msg, j.details].filter(Boolean).join(': ');
  } catch {
    // plain text
  }
  throw new UserError(`CNI ${command} with plugin ${type} failed: ${msg || `exit code ${r.signal ?? r.code}`}`);
}

function pluginConf(net: CniNetwork, plugin: Record<string, unknown>, rt: CniRuntime, prevResult: unknown): Record<string, unknown> {
  const caps = (plugin.capabilities ?? {}) as Record<string, boolean>;
  const runtimeConfig: Record<string, unknown> = {};
  if (caps.ips && rt.ip) runtimeConfig.ips = [rt.ip.includes('/') ? rt.ip : `${rt.ip}/32`];
  return {
    ...plugin,
    name: net.name,
    cniVersion: net.cniVersion,
    ...(prevResult ? { prevResult } : {}),
    ...(Object.keys(runtimeConfig).length ? { runtimeConfig } : {}),
  };
}

/** CNI ADD: every plugin in order; returns the final result. A failure runs DEL for what was added. */
export async function cniAdd(net: CniNetwork, binDir: string, rt: CniRuntime): Promise<CniResult> {
  let prev: unknown;
  for (const p of net.plugins) {
    try {
      prev = JSON.parse(await runPlugin(binDir, p.type as string, 'ADD', rt, pluginConf(net, p, rt, prev)));
    } catch (err) {
      await cniDel(net, binDir, rt, prev).catch(() => undefined);
      throw err;
    }
  }
  const result = prev as CniResult;
  if (!result?.ips?.length) {
    await cniDel(net, binDir, rt, result).catch(() => undefined);
    throw new UserError(`CNI network ${net.name} gave the VM no IP address: its conflist needs an IPAM plugin (host-local, for example)`);
  }
  return result;
}

/** CNI DEL: every plugin in reverse order, with the ADD result as prevResult. Errors are collected, not fatal midway. */
export async function cniDel(net: CniNetwork, binDir: string, rt: CniRuntime, prevResult: unknown): Promise<void> {
  const errors: string[] = [];
  for (const p of [...net.plugins].reverse()) {
    await runPlugin(binDir, p.type as string, 'DEL', rt, pluginConf(net, p, rt, prevResult)).catch((e: Error) => errors.push(e.message));
  }
  if (errors.length) throw new Error(errors.join('; '));
}

export const TAP_PLUGIN = 'tc-redirect-tap';

/**
 * When the plugin directory has tc-redirect-tap, it is chained after the network's own plugins (as
 * Firecracker's Go SDK does) and makes the tap; otherwise firebuild does the same with tc (net/host.ts).
 */
export async function withTapPlugin(net: CniNetwork, binDir: string): Promise<{ net: CniNetwork; tapPlugin: boolean }> {
  if (net.plugins.some((p) => p.type === TAP_PLUGIN)) return { net, tapPlugin: true };
  try {
    await fsp.access(path.join(binDir, TAP_PLUGIN));
  } catch {
    return { net, tapPlugin: false };
  }
  return { net: { ...net, plugins: [...net.plugins, { type: TAP_PLUGIN }] }, tapPlugin: true };
}

/** The tap tc-redirect-tap reported (an interface in the VM's netns other than the CNI one), and the CNI interface's MAC. */
export function tapFromResult(result: CniResult, netns: string, ifname: string): { tap: string; mac?: string } | undefined {
  const inNs = (result.interfaces ?? []).filter((i) => i.sandbox === netns);
  const tap = inNs.find((i) => i.name !== ifname);
  if (!tap) return undefined;
  const mac = inNs.find((i) => i.name === ifname)?.mac;
  return { tap: tap.name, ...(mac ? { mac } : {}) };
}
